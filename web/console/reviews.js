// Manual face reviews of the open room: a candidate who used up their verification attempts
// waits here; the proctor compares the enrolment photo with the live frames and accepts or
// rejects with a reason (the server journals the decision as a `face_review` event).
import { get, post } from '/common/http.js';
import { t } from '/common/i18n.js';

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function figure(src, caption) {
  const img = el('img', { src, alt: caption, loading: 'eager', decoding: 'async' });
  return el('figure', {}, img, el('figcaption', { textContent: caption }));
}

export class Reviews {
  constructor(list, base, fail, onChange) {
    this.list = list;
    this.base = `${base}/face-reviews`;
    this.fail = fail;
    this.onChange = onChange; // (cid, status): the tile shows the review state
    this.items = new Map();
  }

  async load() {
    const { reviews } = await get(this.base);
    for (const review of reviews) this.show(review);
    this.empty();
  }

  // A `face_review_requested` event of the room's stream.
  async requested(event) {
    if (this.items.has(event.review)) return;
    this.show(await get(`${this.base}/${encodeURIComponent(event.review)}`));
    this.empty();
  }

  // A `face_review` event: decided (here or by another proctor of the room).
  decided(event) {
    const item = this.items.get(event.review);
    if (!item || item.review.status !== 'pending') return;
    item.review.status = event.decision;
    this.render(item);
  }

  empty() {
    const pending = [...this.items.values()].filter((item) => item.review.status === 'pending');
    this.list.dataset.pending = String(pending.length);
  }

  show(review) {
    const li = el('li', { className: 'review' });
    li.dataset.review = review.id;
    const item = { review, li };
    this.items.set(review.id, item);
    this.render(item);
    this.list.prepend(li);
  }

  render(item) {
    const { review, li } = item;
    li.dataset.status = review.status;
    li.dataset.cid = review.candidate;
    const when = new Date(review.created_at * 1000).toLocaleTimeString();
    const heading = el('h4', {}, `${review.candidate.slice(0, 8)} · ${when} · `,
      el('span', { className: `pill ${review.status}`, textContent: t(review.status) }));
    const enrolled = review.enrolled_photo
      ? figure(review.enrolled_photo, t('enrolled_photo'))
      : el('p', { className: 'warn', textContent: t('no_enrolment_photo') });
    enrolled.classList.add('enrolled');
    const live = review.live.map((frame) => {
      const shown = figure(frame.url, `${t('live_frame')} ${frame.index + 1} · ${t('score')} ${frame.score}`);
      shown.classList.add('live');
      return shown;
    });
    const faces = el('div', { className: 'faces' }, enrolled, ...live);
    li.replaceChildren(heading, faces);
    if (review.status === 'pending') li.append(this.form(item));
    this.onChange(review.candidate, review.status);
    this.empty();
  }

  form(item) {
    const id = `note-${item.review.id}`;
    const note = el('input', { id, name: 'note', required: true, maxLength: 2000 });
    const form = el('form', { className: 'decide' },
      el('label', { htmlFor: id, textContent: t('review_note') }), note,
      el('button', { type: 'submit', name: 'decision', value: 'accept', textContent: t('accept') }),
      el('button', { type: 'submit', name: 'decision', value: 'reject', className: 'danger', textContent: t('reject') }));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const decision = event.submitter.value;
      for (const button of form.querySelectorAll('button')) button.disabled = true;
      try {
        item.review = await post(`${this.base}/${encodeURIComponent(item.review.id)}`,
          { decision, note: note.value.trim() });
        this.render(item);
      } catch (error) {
        for (const button of form.querySelectorAll('button')) button.disabled = false;
        this.fail(error);
      }
    });
    return form;
  }

  rerender() {
    for (const item of this.items.values()) if (item.review.status !== 'pending') this.render(item);
  }
}
