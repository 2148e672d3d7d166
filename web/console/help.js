// Candidates' help requests in the open room: a raised hand or a message, one open request
// per candidate (as the room's state keeps them). A new one shows in the help list (an
// assertive live region), marks the tile and plays a short tone; the proctor answers with a
// message to that candidate, which settles the request for every console of the room.
import { post } from '/common/http.js';
import { t } from '/common/i18n.js';

const TONE_HZ = [880, 660];
const TONE_S = 0.18;

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

export class Help {
  // tile(cid) -> Tile (its hand badge), who(cid) -> what to call the candidate.
  constructor(list, base, { tile, who, fail }) {
    this.list = list;
    this.base = base;
    this.tile = tile;
    this.who = who;
    this.fail = fail;
    this.open = new Map(); // cid -> { request, li }
    this.audio = null;
    this.list.dataset.open = '0';
  }

  // From the room's state when the room opens: no tone for each, one for all of them.
  load(requests) {
    for (const request of Object.values(requests)) this.raised(request, false);
    if (this.open.size) this.chime();
  }

  // A `help` event (or one of the room's state).
  raised(request, chime = true) {
    const known = this.open.get(request.cid);
    const li = known ? known.li : el('li', { className: 'help' });
    li.dataset.cid = request.cid;
    this.open.set(request.cid, { request, li });
    this.render(request.cid);
    if (!known) this.list.prepend(li);
    this.tile(request.cid).setHelp(request);
    this.count();
    if (chime) this.chime();
  }

  // A `help_lowered` event, or a proctor's message to the candidate (`to`).
  settled(cid) {
    const known = this.open.get(cid);
    if (!known) return;
    this.open.delete(cid);
    known.li.remove();
    this.tile(cid).setHelp(null);
    this.count();
  }

  count() {
    this.list.dataset.open = String(this.open.size);
  }

  render(cid) {
    const { request, li } = this.open.get(cid);
    const kind = request.kind === 'message' ? 'con_help_message' : 'con_hand';
    const time = el('time', { dateTime: new Date(request.at * 1000).toISOString(),
      textContent: new Date(request.at * 1000).toLocaleTimeString() });
    const heading = el('p', {}, time, ` · ${this.who(cid)} · `,
      el('span', { className: 'pill hand', textContent: t(kind) }));
    const parts = [heading];
    if (request.text) parts.push(el('blockquote', { className: 'help-text', textContent: request.text }));
    // What the proctor was typing survives a new request of the same candidate.
    const typing = li.querySelector('input[name="answer"]');
    const form = this.form(cid);
    if (typing) form.elements.answer.value = typing.value;
    parts.push(form);
    li.replaceChildren(...parts);
  }

  form(cid) {
    const id = `answer-${cid}`;
    const input = el('input', { id, name: 'answer', required: true, maxLength: 2000 });
    const send = el('button', { type: 'submit', textContent: t('con_send_answer') });
    const form = el('form', { className: 'answer' },
      el('label', { htmlFor: id, textContent: `${t('con_answer_label')} (${this.who(cid)})` }), input, send);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      send.disabled = true;
      try {
        // The request is settled when the message comes back on the room's stream.
        await post(`${this.base}/messages`, { to: cid, text: input.value.trim() });
        input.value = '';
      } catch (error) {
        this.fail(error);
      } finally {
        send.disabled = false;
      }
    });
    return form;
  }

  rerender() {
    for (const cid of this.open.keys()) this.render(cid);
  }

  // Two short notes made by WebAudio: no audio file to fetch, nothing the CSP must allow.
  chime() {
    try {
      if (!this.audio) this.audio = new AudioContext();
      const audio = this.audio;
      if (audio.state === 'suspended') audio.resume().catch(() => {});
      const start = audio.currentTime;
      TONE_HZ.forEach((hz, index) => {
        const at = start + index * TONE_S;
        const tone = audio.createOscillator();
        const gain = audio.createGain();
        tone.frequency.value = hz;
        gain.gain.setValueAtTime(0.0001, at);
        gain.gain.exponentialRampToValueAtTime(0.3, at + 0.02);
        gain.gain.exponentialRampToValueAtTime(0.0001, at + TONE_S);
        tone.connect(gain).connect(audio.destination);
        tone.start(at);
        tone.stop(at + TONE_S);
      });
      this.list.dataset.chimes = String(Number(this.list.dataset.chimes || 0) + 1);
    } catch {
      // no audio output: the list and the badge still show the request
    }
  }

  close() {
    if (this.audio) this.audio.close().catch(() => {});
    this.audio = null;
  }
}
