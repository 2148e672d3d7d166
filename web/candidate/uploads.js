// Photo and whiteboard uploads with progress: XMLHttpRequest, since fetch reports no
// upload progress. The type and size are checked here first, so that a wrong file is
// explained at once instead of spending one of the candidate's upload attempts.
import { t } from '/common/i18n.js';

const TYPES = ['image/jpeg', 'image/png', 'image/webp'];
const MAX_BYTES = 8 * 1024 * 1024; // the gateway's image limit (ml.max_image_bytes)

function send(kind, file, progress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', `/v1/uploads/${kind}`);
    xhr.withCredentials = true;
    xhr.setRequestHeader('Content-Type', file.type);
    xhr.upload.addEventListener('progress', (event) => {
      if (event.lengthComputable) progress(event.loaded / event.total);
    });
    xhr.addEventListener('load', () => {
      if (xhr.status === 201) {
        resolve();
        return;
      }
      let reason = `http_${xhr.status}`;
      try {
        reason = JSON.parse(xhr.responseText).reason || reason;
      } catch {
        // not problem+json: the status says enough
      }
      reject(Object.assign(new Error(reason), { reason, status: xhr.status }));
    });
    xhr.addEventListener('error', () => reject(Object.assign(new Error('network'), { reason: 'network' })));
    xhr.send(file);
  });
}

// `form` holds a file input, a progress bar and an output; its data-kind is the route's
// last segment (photos, whiteboards).
export function wireUpload(form) {
  const input = form.querySelector('input[type="file"]');
  const bar = form.querySelector('progress');
  const result = form.querySelector('output');
  const button = form.querySelector('button[type="submit"]');
  const say = (key, extra = '', state = '') => {
    if (extra) delete result.dataset.i18n;
    else result.dataset.i18n = key;
    result.textContent = extra ? `${t(key)}: ${extra}` : t(key);
    result.className = state === 'failed' ? 'bad' : '';
    result.dataset.state = state;
  };
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const file = input.files[0];
    if (!file) return;
    delete result.dataset.done;
    if (!TYPES.includes(file.type)) {
      say('cand_upload_type', '', 'failed');
      return;
    }
    if (file.size > MAX_BYTES) {
      say('cand_upload_size', '', 'failed');
      return;
    }
    button.disabled = true;
    bar.hidden = false;
    bar.value = 0;
    say('cand_uploading', '', 'uploading');
    try {
      await send(form.dataset.kind, file, (done) => { bar.value = done; });
      bar.value = 1;
      say('uploaded', '', 'done');
      result.dataset.done = 'true';
      input.value = '';
    } catch (error) {
      say('cand_upload_failed', error.reason, 'failed');
    } finally {
      button.disabled = false;
      bar.hidden = true;
    }
  });
}
