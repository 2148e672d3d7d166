// The phone page's strings: the side camera a candidate pairs from the candidate page.
import { extend } from '/common/i18n.js';

extend({
  'zh-CN': {
    phone_title: '侧面摄像头',
    phone_intro: '请将手机固定在桌子侧面，让摄像头拍到桌面和双手。',
    phone_start: '开始拍摄',
    phone_stop: '停止',
    phone_state_idle: '尚未开始',
    phone_state_connecting: '正在连接…',
    phone_state_live: '已连接，监考老师可以看到画面',
    phone_state_failed: '连接失败',
    phone_state_stopped: '已停止',
    phone_no_token: '链接中没有配对码：请重新扫描考生页面上的二维码。',
    phone_preview: '摄像头画面预览',
  },
  en: {
    phone_title: 'Side camera',
    phone_intro: 'Fix the phone at the side of your desk so that it films the desk and your hands.',
    phone_start: 'Start filming',
    phone_stop: 'Stop',
    phone_state_idle: 'Not started',
    phone_state_connecting: 'Connecting…',
    phone_state_live: 'Connected: the proctor can see the picture',
    phone_state_failed: 'Connection failed',
    phone_state_stopped: 'Stopped',
    phone_no_token: 'The link has no pairing code: scan the QR code on the candidate page again.',
    phone_preview: 'Camera preview',
  },
});
