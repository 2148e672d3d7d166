// The exam's data panel (retention runs and their receipts, legal holds, exports for an
// authority) and its privacy policy panel: a form over the API that exists for each.
import { call, get, post } from '/common/http.js';
import { t } from '/common/i18n.js';
import { $, button, clearMessages, fail, listItem, localInput, note, when } from '/organiser/ui.js';

const RECEIPTS_SHOWN = 50;

export class Privacy {
  constructor(view) {
    this.view = view;
    this.data = null;
    this.listeners = [];
    this.on('run-retention', 'click', () => this.runRetention());
    this.on('hold-form', 'submit', (event) => this.placeHold(event));
    this.on('export-form', 'submit', (event) => this.createExport(event));
    this.on('policy-form', 'submit', (event) => this.publishPolicy(event));
  }

  on(id, type, handler) {
    $(id).addEventListener(type, handler);
    this.listeners.push(() => $(id).removeEventListener(type, handler));
  }

  close() {
    for (const remove of this.listeners) remove();
  }

  get base() {
    return this.view.base;
  }

  async load() {
    const [receipts, holds, exports] = await Promise.all([
      get(`${this.base}/retention/receipts`),
      get(`${this.base}/holds`),
      get(`${this.base}/exports`),
    ]);
    this.data = { receipts: receipts.entries, holds: holds.holds, exports: exports.exports };
    this.rerender();
  }

  rerender() {
    if (!this.data) return;
    const { receipts, holds, exports } = this.data;
    $('receipts').replaceChildren(...receipts.slice(-RECEIPTS_SHOWN).reverse().map((entry) =>
      listItem(entry.kind || entry.type || '', entry.at ? when(new Date(entry.at * 1000)) : '',
        entry.seq !== undefined ? `#${entry.seq}` : '')));
    $('holds').replaceChildren(...holds.map((hold) => listItem(
      hold.reference, hold.reason, hold.candidate || t('org_whole_exam'),
      hold.placed_by, when(new Date(hold.placed_at * 1000)),
      button(t('org_release'), () => this.releaseHold(hold), { name: hold.reference }))));
    $('exports').replaceChildren(...exports.map((record) => {
      const link = document.createElement('a');
      link.href = `${this.base}/exports/${encodeURIComponent(record.id)}`;
      link.textContent = t('org_download');
      link.setAttribute('aria-label', `${t('org_download')} ${record.reference || record.id}`);
      return listItem(record.reference || '', record.subject === '*' ? t('org_whole_exam')
        : record.subject || '', link);
    }));
  }

  async runRetention() {
    clearMessages();
    try {
      const summary = await post(`${this.base}/retention/runs`);
      const deleted = summary.receipts ? summary.receipts.length : 0;
      $('retention-result').textContent = `${t('org_retention_done')} (${deleted})`;
      $('retention-result').hidden = false;
      note('org_retention_done');
      await this.load();
    } catch (error) {
      fail(error);
    }
  }

  subject(id) {
    const candidate = $(id).value.trim();
    return candidate ? { candidate } : {};
  }

  async placeHold(event) {
    event.preventDefault();
    clearMessages();
    try {
      await post(`${this.base}/holds`, {
        reference: $('hold-reference').value, reason: $('hold-reason').value,
        ...this.subject('hold-candidate'),
      });
      $('hold-form').reset();
      note('org_hold_placed');
      await this.load();
    } catch (error) {
      fail(error);
    }
  }

  async releaseHold(hold) {
    clearMessages();
    try {
      await call('DELETE', `${this.base}/holds/${encodeURIComponent(hold.id)}`);
      note('org_hold_released');
      await this.load();
    } catch (error) {
      fail(error);
    }
  }

  async createExport(event) {
    event.preventDefault();
    clearMessages();
    try {
      await post(`${this.base}/exports`, {
        reference: $('export-reference').value, reason: $('export-reason').value,
        ...this.subject('export-candidate'),
      });
      $('export-form').reset();
      note('org_exported');
      await this.load();
    } catch (error) {
      fail(error);
    }
  }

  // -- the privacy policy ---------------------------------------------------------------

  async loadPolicy() {
    const policy = await get(`${this.base}/policy`);
    $('policy-current').textContent = policy.version || this.view.exam.policy_version;
    if (!$('policy-effective').value) $('policy-effective').value = localInput(new Date().toISOString());
    const text = policy.text || {};
    if (!$('policy-text-zh').value && text['zh-CN']) $('policy-text-zh').value = text['zh-CN'];
    if (!$('policy-text-en').value && text.en) $('policy-text-en').value = text.en;
  }

  async publishPolicy(event) {
    event.preventDefault();
    clearMessages();
    const body = {
      version: $('policy-version').value.trim(),
      effective_at: new Date($('policy-effective').value).toISOString(),
      text: { 'zh-CN': $('policy-text-zh').value, en: $('policy-text-en').value },
      changes: { 'zh-CN': $('policy-changes-zh').value, en: $('policy-changes-en').value },
    };
    try {
      await call('PUT', `${this.base}/policy`, body);
      $('policy-version').value = '';
      await this.view.loadExam();
      await this.loadPolicy();
      note('org_published', body.version);
    } catch (error) {
      fail(error);
    }
  }
}
