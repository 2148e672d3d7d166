// Raise a hand or message the proctor (`/v1/me/help`), and show the proctor's messages.
// The proctor answers with a room message to this candidate; it arrives with the room
// view the page reads at each heartbeat, and is appended (never re-rendered) to a polite
// live region, so a screen reader says each new message once.
import { call, post } from '/common/http.js';
import { t } from '/common/i18n.js';

const SHOWN_MESSAGES = 20;
const $ = (id) => document.getElementById(id);

export class Help {
  constructor() {
    this.raised = false;
    this.busy = false;
    this.seen = new Set();
    $('raise-hand').addEventListener('click', () => this.toggle());
    $('help-send').addEventListener('click', () => this.send());
    this.render();
  }

  async toggle() {
    if (this.busy) return;
    this.busy = true;
    try {
      if (this.raised) await call('DELETE', '/v1/me/help');
      else await post('/v1/me/help', { kind: 'hand' });
      this.raised = !this.raised;
      this.say(this.raised ? 'cand_hand_raised' : 'cand_hand_lowered');
    } catch (error) {
      this.refused(error);
    } finally {
      this.busy = false;
      this.render();
    }
  }

  async send() {
    const text = $('help-text').value.trim();
    if (!text) {
      this.say('cand_help_empty');
      $('help-text').focus();
      return;
    }
    $('help-send').disabled = true;
    try {
      await post('/v1/me/help', { kind: 'message', text });
      $('help-text').value = '';
      this.say('cand_help_sent');
    } catch (error) {
      this.refused(error);
    } finally {
      $('help-send').disabled = false;
    }
  }

  refused(error) {
    if (error.status === 429) this.say('cand_help_limit');
    else this.say(null, `${t('error')}: ${error.reason || error.message}`);
  }

  say(key, text = null) {
    if (key) $('help-status').dataset.i18n = key;
    else delete $('help-status').dataset.i18n;
    $('help-status').textContent = key ? t(key) : text;
  }

  // The room view of a heartbeat: its messages, and whether a request is still open (a
  // proctor's answer settles it, and the hand comes down by itself).
  update(room) {
    if ('help' in room && !room.help && this.raised && !this.busy) {
      this.raised = false;
      this.render();
    }
    const list = $('messages');
    for (const message of room.messages || []) {
      const id = message.id || `${message.at}:${message.text}`;
      if (this.seen.has(id)) continue;
      this.seen.add(id);
      const li = document.createElement('li');
      li.dataset.id = id;
      li.textContent = message.text;
      list.append(li);
    }
    while (list.children.length > SHOWN_MESSAGES) list.firstElementChild.remove();
  }

  render() {
    const button = $('raise-hand');
    button.setAttribute('aria-pressed', String(this.raised));
    button.dataset.i18n = this.raised ? 'cand_lower_hand' : 'cand_raise_hand';
    button.textContent = t(button.dataset.i18n);
  }

  reset() {
    this.raised = false;
    this.seen.clear();
    $('messages').replaceChildren();
    this.say(null, '');
    $('help-text').value = '';
    this.render();
  }
}
