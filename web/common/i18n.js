// Chinese (default) and English. Elements carry data-i18n="key" (text) or
// data-i18n-label="key" (aria-label); t() gives a string for scripts.

const TEXT = {
  'zh-CN': {
    lang_switch: 'English',
    candidate_title: '考生端',
    console_title: '监考台',
    exam_no: '考试编号',
    candidate_no: '考生号',
    login: '登录',
    username: '用户名',
    password: '密码',
    policy_heading: '隐私政策',
    policy_text: '考试期间将录制摄像头与麦克风，数据仅保存在本次考试所在地区，并按期删除。',
    policy_accept: '我已阅读并同意隐私政策',
    continue: '继续',
    guardian_needed: '未成年考生需监护人同意后方可参加考试，请联系考务人员。',
    check_heading: '设备与网络检测',
    check_devices: '检测设备',
    camera: '摄像头',
    microphone: '麦克风',
    browser: '浏览器支持',
    network_question: '您当前使用的网络',
    net_wifi: 'Wi-Fi',
    net_ethernet: '有线网络',
    net_cellular: '移动网络',
    net_unknown: '不确定',
    ok: '正常',
    failed: '失败',
    cellular_warning: '您正在使用移动网络：视频每小时约消耗 150 MB 流量。',
    join: '进入考场',
    live_heading: '考试进行中',
    status_live: '已连接，正在传输音视频',
    status_connecting: '正在连接…',
    status_lost: '连接已断开，正在重新连接…',
    status_offline: '网络已断开，恢复后将自动重连',
    talkback_on: '监考老师正在讲话',
    talkback_off: '监考老师未讲话',
    photo_heading: '上传照片（如答题卡）',
    photo_file: '选择图片',
    upload: '上传',
    uploaded: '已上传',
    messages: '消息',
    rooms: '我的考场',
    incidents: '异常事件',
    send: '发送',
    message_text: '发给全考场的消息',
    talk: '按住讲话',
    talking: '正在讲话…',
    logout: '退出',
    present: '在线',
    absent: '未到',
    disconnected: '掉线',
    left: '已离开',
    ended: '已结束',
    joined: '在线',
    error: '出错了',
    confirmed: '确认违规',
    dismissed: '驳回',
    reviewed: '已复核',
  },
  en: {
    lang_switch: '中文',
    candidate_title: 'Candidate',
    console_title: 'Proctor console',
    exam_no: 'Exam number',
    candidate_no: 'Candidate number',
    login: 'Log in',
    username: 'Username',
    password: 'Password',
    policy_heading: 'Privacy policy',
    policy_text:
      'Your camera and microphone are recorded during the exam; the data stays in the exam\'s region and is deleted on schedule.',
    policy_accept: 'I have read and accept the privacy policy',
    continue: 'Continue',
    guardian_needed: 'A guardian must consent before a minor can sit the exam: please contact the exam staff.',
    check_heading: 'Device and network check',
    check_devices: 'Check devices',
    camera: 'Camera',
    microphone: 'Microphone',
    browser: 'Browser support',
    network_question: 'Your network',
    net_wifi: 'Wi-Fi',
    net_ethernet: 'Wired',
    net_cellular: 'Mobile data',
    net_unknown: 'Not sure',
    ok: 'OK',
    failed: 'Failed',
    cellular_warning: 'You are on a mobile network: video uses about 150 MB an hour.',
    join: 'Join the exam room',
    live_heading: 'Exam in progress',
    status_live: 'Connected: sending audio and video',
    status_connecting: 'Connecting…',
    status_lost: 'Connection lost: reconnecting…',
    status_offline: 'You are offline: we reconnect when the network is back',
    talkback_on: 'The proctor is speaking',
    talkback_off: 'The proctor is not speaking',
    photo_heading: 'Upload a photo (an answer sheet)',
    photo_file: 'Choose an image',
    upload: 'Upload',
    uploaded: 'Uploaded',
    messages: 'Messages',
    rooms: 'My rooms',
    incidents: 'Incidents',
    send: 'Send',
    message_text: 'Message to the whole room',
    talk: 'Hold to talk',
    talking: 'Talking…',
    logout: 'Log out',
    present: 'Present',
    absent: 'Absent',
    disconnected: 'Disconnected',
    left: 'Left',
    ended: 'Ended',
    joined: 'Present',
    error: 'Something went wrong',
    confirmed: 'Confirm',
    dismissed: 'Dismiss',
    reviewed: 'Reviewed',
  },
};

let current = 'zh-CN';

export function t(key) {
  return TEXT[current][key] ?? TEXT.en[key] ?? key;
}

export function apply(root = document) {
  document.documentElement.lang = current;
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-label]')) {
    el.setAttribute('aria-label', t(el.dataset.i18nLabel));
  }
}

export function install(button, onChange = () => {}) {
  apply();
  button.addEventListener('click', () => {
    current = current === 'zh-CN' ? 'en' : 'zh-CN';
    apply();
    onChange();
  });
}
