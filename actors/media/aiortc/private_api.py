"""The names of every aiortc/aioice part beyond the public API that examday touches.

They live apart from `actors.media.aiortc.rtc` (which says what each is for
and checks them all in `missing_private_api`) so that every module of this
package, `ice_consent` included, which `rtc` itself imports, reads a private
name from this one table rather than spelling it out. Outside this package
no module names any of them: tests/test_private_api.py fails when one does.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

PRIVATE_API: Final[Mapping[str, str]] = MappingProxyType(
    {
        "receiver_decoder_queue": "_RTCRtpReceiver__decoder_queue",
        "receiver_send_pli": "_send_rtcp_pli",
        "sender_keyframe_hook": "_send_keyframe",
        "sender_encoder": "_RTCRtpSender__encoder",
        "receiver_jitter_buffer": "_RTCRtpReceiver__jitter_buffer",
        "sender_ssrc": "_ssrc",
        "sender_rtp_history": "_RTCRtpSender__rtp_history",
        "sender_retransmit": "_retransmit",
        "sender_packet_count": "_RTCRtpSender__packet_count",
        "sender_octet_count": "_RTCRtpSender__octet_count",
        "sender_ntp_timestamp": "_RTCRtpSender__ntp_timestamp",
        "sender_rtp_timestamp": "_RTCRtpSender__rtp_timestamp",
        "transport_state": "_state",  # on RTCDtlsTransport, a State
        "transport_tx_srtp": "_tx_srtp",  # a pylibsrtp Session once connected
        "transport_tx_packets": "_RTCDtlsTransport__tx_packets",
        "transport_tx_bytes": "_RTCDtlsTransport__tx_bytes",
        "transport_rtp_in": "_handle_rtp_data",  # on RTCDtlsTransport: each SRTP packet, decrypted
        "ice_connection": "_connection",  # on RTCIceTransport, an aioice Connection
        "ice_nominated": "_nominated",  # on aioice's Connection: component -> CandidatePair
        "ice_protocols": "_protocols",  # on aioice's Connection: one STUN transport a candidate
        "ice_consent_task": "_query_consent_task",  # on aioice's Connection, cancelled by close()
        # ICE mux (`udp_mux`): gathering makes each connection's host candidates with this
        # coroutine method of aioice's Connection, (component, addresses, timeout) -> candidates
        "ice_component_candidates": "get_component_candidates",
        "ice_local_username": "_local_username",  # on aioice's Connection: its ufrag, a str
        "ice_data_in": "data_received",  # on aioice's Connection: (data, component), non-STUN
        # aioice.ice's per-socket protocol, subclassed: (receiver) made, `local_candidate`,
        # `request` (a STUN transaction), `datagram_received`, `connection_lost`, `close`
        "stun_protocol": "StunProtocol",
        # ICE restart in place (`ice_restart`), on aioice's Connection unless said otherwise
        "ice_restart_check_list": "_check_list",  # a list of CandidatePair
        "ice_restart_remote_candidates": "_remote_candidates",  # a list of Candidate
        "ice_restart_remote_end": "_remote_candidates_end",  # a bool
        "ice_restart_gatherer_remote_end": "_remote_candidates_end",  # on RTCIceGatherer, a bool
        "ice_restart_local_password": "_local_password",  # a str
        "ice_restart_local_candidates": "_local_candidates",  # a list of Candidate
        "ice_restart_early_checks": "_early_checks",  # a deque of (message, addr, protocol)
        "ice_restart_early_checks_done": "_early_checks_done",  # a bool: checks held while False
        "ice_restart_nominating": "_nominating",  # a set of components
        "ice_restart_check_incoming": "check_incoming",  # (message, addr, protocol): a check in
        "ice_restart_check_start": "check_start_task",  # (pair): start its check, once
        "receiver_decoder_worker": "decoder_worker",  # in aiortc.rtcrtpreceiver
        "host_addresses": "get_host_addresses",  # in aioice.ice
        "consent_check": "query_consent",  # on aioice.ice.Connection, a coroutine
        "rtcp_loop": "_run_rtcp",  # on RTCRtpSender and RTCRtpReceiver, a coroutine
        "rtcp_send": "_send_rtcp",  # on RTCRtpSender and RTCRtpReceiver, a coroutine
        "sender_rtcp_random": "random",  # in aiortc.rtcrtpsender, read by `_run_rtcp`
        "receiver_rtcp_random": "random",  # in aiortc.rtcrtpreceiver, read by `_run_rtcp`
    }
)
