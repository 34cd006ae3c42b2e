//! Parsing real-looking browser offers into the model, and writing them back.

mod common;

use common::*;
use switchyard_sdp::{
    remote_transport, Direction, Error, Extmap, MediaKind, SessionDescription, Setup, SsrcGroup,
    SsrcInfo,
};

#[test]
fn chrome_offer_session_level() {
    let sdp = parse(CHROME_OFFER);
    assert_eq!(sdp.origin.session_id, "4215775240449105457");
    assert_eq!(sdp.origin.session_version, "2");
    assert_eq!(sdp.session_name, "-");
    assert_eq!(sdp.timing, "0 0");
    assert_eq!(
        sdp.bundle(),
        Some(&["0".to_string(), "1".into(), "2".into()][..])
    );
    assert_eq!(
        sdp.msid_semantic.as_deref(),
        Some("WMS 3d5b8e2a-6f1c-4b7e-9a0d-2c8f1e4b7a6d")
    );
    assert!(!sdp.ice_lite);
    assert!(sdp.ice_ufrag.is_none() && sdp.fingerprints.is_empty());
    assert_eq!(sdp.other_attributes, vec!["extmap-allow-mixed".to_string()]);
    let kinds: Vec<_> = sdp.media.iter().map(|m| m.kind.clone()).collect();
    assert_eq!(
        kinds,
        [MediaKind::Audio, MediaKind::Video, MediaKind::Application]
    );
}

#[test]
fn chrome_offer_audio() {
    let sdp = parse(CHROME_OFFER);
    let audio = &sdp.media[0];
    assert_eq!(audio.port, 9);
    assert_eq!(audio.proto, "UDP/TLS/RTP/SAVPF");
    assert_eq!(audio.mid.as_deref(), Some("0"));
    assert_eq!(audio.direction, Direction::SendOnly);
    assert!(audio.rtcp_mux && audio.rtcp_rsize && !audio.end_of_candidates);
    assert_eq!(audio.connection.as_deref(), Some("IN IP4 0.0.0.0"));
    assert_eq!(audio.ice_ufrag.as_deref(), Some("Xk3d"));
    assert_eq!(audio.ice_pwd.as_deref(), Some("V9u6Tq2nJmGm3rKp8yWb1c0e"));
    assert_eq!(audio.ice_options.as_deref(), Some("trickle"));
    assert_eq!(audio.setup, Some(Setup::ActPass));
    assert_eq!(audio.fingerprints.len(), 1);
    assert_eq!(audio.fingerprints[0].algorithm, "sha-256");
    let pts: Vec<u8> = audio.codecs.iter().map(|c| c.pt).collect();
    assert_eq!(pts, [111, 63, 9, 0, 8, 13, 110, 126]);
    let opus = &audio.codecs[0];
    assert_eq!(
        (opus.name.as_str(), opus.clock_rate, opus.channels),
        ("opus", 48000, Some(2))
    );
    assert_eq!(opus.fmtp.as_deref(), Some("minptime=10;useinbandfec=1"));
    assert_eq!(opus.rtcp_fb, vec!["transport-cc".to_string()]);
    assert_eq!(opus.fmtp_param("useinbandfec"), Some("1"));
    assert_eq!(audio.codecs[1].name, "red");
    assert_eq!(audio.codecs[1].fmtp.as_deref(), Some("111/111"));
    assert_eq!(audio.codec(110).map(|c| c.clock_rate), Some(48000));
    assert_eq!(audio.extmaps.len(), 4);
    assert_eq!(
        audio.extmaps[3],
        Extmap {
            id: 4,
            direction: None,
            uri: "urn:ietf:params:rtp-hdrext:sdes:mid".into(),
            attributes: None
        }
    );
    assert_eq!(
        audio.msid,
        Some((
            "3d5b8e2a-6f1c-4b7e-9a0d-2c8f1e4b7a6d".into(),
            "8a1f0c2e-5d3b-4e6f-a7b9-0c1d2e3f4a5b".into()
        ))
    );
    assert_eq!(
        audio.ssrcs,
        vec![SsrcInfo {
            ssrc: 1129104006,
            cname: Some("qH3T0dCvJ9r3xYpM".into()),
            msid_stream: Some("3d5b8e2a-6f1c-4b7e-9a0d-2c8f1e4b7a6d".into()),
            msid_track: Some("8a1f0c2e-5d3b-4e6f-a7b9-0c1d2e3f4a5b".into()),
        }]
    );
    assert_eq!(audio.primary_ssrc(), Some(1129104006));
    // Candidates: an mDNS host, a TCP host, a server-reflexive one.
    assert_eq!(audio.candidates.len(), 3);
    let host = &audio.candidates[0];
    assert_eq!(host.foundation, "2587239318");
    assert_eq!(
        (host.component, host.transport.as_str(), host.priority),
        (1, "udp", 2122260223)
    );
    assert_eq!(host.address, "4e1b0b6c-1b6e-4a5c-9c4e-2f0d5c1a7b3e.local");
    assert_eq!((host.port, host.typ.as_str()), (58011, "host"));
    assert_eq!(
        host.socket_addr(),
        None,
        "mDNS names are not socket addresses"
    );
    assert_eq!(
        host.extensions,
        ["generation", "0", "network-id", "1", "network-cost", "10"]
    );
    assert_eq!(audio.candidates[1].transport, "tcp");
    let srflx = &audio.candidates[2];
    assert_eq!(srflx.typ, "srflx");
    assert_eq!(
        srflx.socket_addr(),
        Some("198.51.100.23:58011".parse().unwrap())
    );
    assert!(audio
        .other_attributes
        .contains(&"rtcp:9 IN IP4 0.0.0.0".to_string()));
}

#[test]
fn chrome_offer_video() {
    let sdp = parse(CHROME_OFFER);
    let video = &sdp.media[1];
    assert_eq!(video.mid.as_deref(), Some("1"));
    assert_eq!(video.direction, Direction::SendOnly);
    assert_eq!(video.codecs.len(), 25);
    let vp8 = &video.codecs[0];
    assert_eq!(
        (vp8.pt, vp8.name.as_str(), vp8.clock_rate, vp8.channels),
        (96, "VP8", 90000, None)
    );
    assert_eq!(
        vp8.rtcp_fb,
        ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]
    );
    let rtx = video.codec(97).unwrap();
    assert!(rtx.is("RTX") && rtx.is_auxiliary());
    assert_eq!(rtx.fmtp_param("apt"), Some("96"));
    assert!(rtx.rtcp_fb.is_empty());
    let h264 = video.codec(106).unwrap();
    assert_eq!(h264.fmtp_param("profile-level-id"), Some("42e01f"));
    assert_eq!(h264.fmtp_param("packetization-mode"), Some("1"));
    assert_eq!(video.codec(45).unwrap().name, "AV1");
    assert_eq!(
        video.codec(100).unwrap().fmtp.as_deref(),
        Some("profile-id=2")
    );
    assert_eq!(video.codec(118).unwrap().name, "ulpfec");
    assert_eq!(video.extmaps.len(), 11);
    assert_eq!(
        video.ssrc_groups,
        vec![SsrcGroup {
            semantics: "FID".into(),
            ssrcs: vec![2231627014, 632943048]
        }]
    );
    assert_eq!(video.ssrcs.len(), 2);
    assert_eq!(video.primary_ssrc(), Some(2231627014), "not the RTX SSRC");
    assert!(video.candidates.is_empty());
}

#[test]
fn chrome_offer_datachannel() {
    let sdp = parse(CHROME_OFFER);
    let app = &sdp.media[2];
    assert_eq!(app.kind, MediaKind::Application);
    assert_eq!(app.proto, "UDP/DTLS/SCTP");
    assert_eq!(app.formats, ["webrtc-datachannel"]);
    assert!(app.codecs.is_empty());
    assert_eq!(
        app.other_attributes,
        ["sctp-port:5000", "max-message-size:262144"]
    );
    assert!(!app.is_rejected() && !app.is_srtp());
}

#[test]
fn chrome_remote_transport() {
    let t = remote_transport(&parse(CHROME_OFFER)).unwrap();
    assert_eq!(t.ice_ufrag, "Xk3d");
    assert_eq!(t.ice_pwd, "V9u6Tq2nJmGm3rKp8yWb1c0e");
    assert_eq!(
        t.fingerprint,
        "sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08"
    );
    assert_eq!(t.setup, Setup::ActPass);
}

#[test]
fn firefox_offer() {
    let sdp = parse(FIREFOX_OFFER);
    assert_eq!(sdp.origin.username, "mozilla...THIS_IS_SDPARTA-99.0");
    assert_eq!(
        sdp.fingerprints.len(),
        1,
        "Firefox's fingerprint is session-level"
    );
    assert_eq!(sdp.ice_options.as_deref(), Some("trickle"));
    assert_eq!(sdp.msid_semantic.as_deref(), Some("WMS *"));
    let (audio, video) = (&sdp.media[0], &sdp.media[1]);
    assert!(audio.fingerprints.is_empty());
    assert_eq!(audio.direction, Direction::SendRecv);
    assert_eq!(
        audio.codecs.iter().map(|c| c.pt).collect::<Vec<_>>(),
        [109, 9, 0, 8, 101]
    );
    assert_eq!(audio.codec(9).unwrap().channels, Some(1));
    assert_eq!(audio.codec(101).unwrap().fmtp.as_deref(), Some("0-15"));
    assert_eq!(
        audio.msid.as_ref().map(|(s, _)| s.as_str()),
        Some("{6a1b6d5e-3c2f-4e8a-9b7d-1f0e2d3c4b5a}")
    );
    assert_eq!(
        audio.ssrcs[0].msid_stream, None,
        "Firefox writes no a=ssrc msid"
    );
    assert_eq!(video.extmaps[3].direction, Some(Direction::RecvOnly));
    assert_eq!(video.codec(120).unwrap().rtcp_fb.len(), 5);
    assert_eq!(
        video.codec(126).unwrap().fmtp_param("packetization-mode"),
        Some("1")
    );
    assert_eq!(video.primary_ssrc(), Some(2717213384));
    let t = remote_transport(&sdp).unwrap();
    assert_eq!(t.ice_ufrag, "9d3c1a2b");
    assert!(t.fingerprint.starts_with("sha-256 0A:27:D6"));
}

#[test]
fn aiortc_offer() {
    let sdp = parse(AIORTC_OFFER);
    let (audio, video) = (&sdp.media[0], &sdp.media[1]);
    assert_eq!(audio.port, 51378);
    assert_eq!(audio.connection.as_deref(), Some("IN IP4 192.168.1.50"));
    assert_eq!(
        audio
            .codecs
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["opus", "PCMU", "PCMA"]
    );
    assert_eq!(audio.fingerprints.len(), 3);
    assert!(audio.end_of_candidates);
    assert_eq!(
        audio.candidates[0].socket_addr(),
        Some("192.168.1.50:51378".parse().unwrap())
    );
    assert_eq!(
        video.codec(97).unwrap().rtcp_fb,
        ["nack", "nack pli", "goog-remb"]
    );
    assert_eq!(video.primary_ssrc(), Some(2566163226));
    let t = remote_transport(&sdp).unwrap();
    assert_eq!(t.ice_ufrag, "uX7q");
    assert!(
        t.fingerprint.starts_with("sha-256 5E:4A"),
        "sha-256 chosen over sha-384/512: {}",
        t.fingerprint
    );
}

#[test]
fn fixtures_round_trip_exactly() {
    for fixture in [CHROME_OFFER, FIREFOX_OFFER, AIORTC_OFFER] {
        let first = parse(fixture);
        let text = first.to_sdp();
        sections(&text); // CRLF everywhere
        let second = SessionDescription::parse(&text).unwrap();
        assert_eq!(first, second);
        assert_eq!(text, second.to_sdp());
    }
}

#[test]
fn lf_only_and_blank_lines_are_tolerated() {
    let lf = SessionDescription::parse(CHROME_OFFER).unwrap();
    let messy = format!(
        "\n\n{}\n\n",
        crlf(CHROME_OFFER).replace("a=rtcp-mux\r\n", "  a=rtcp-mux  \r\n\r\n")
    );
    assert_eq!(lf, SessionDescription::parse(&messy).unwrap());
}

#[test]
fn static_payload_types_and_wildcard_feedback() {
    let text = "v=0\no=- 1 1 IN IP4 0.0.0.0\ns=-\nt=0 0\nm=audio 9 RTP/SAVPF 0 8 96 101\na=rtcp-fb:* nack\na=rtcp-fb:0 trr-int 100\n";
    let sdp = SessionDescription::parse(text).unwrap();
    let m = &sdp.media[0];
    // 96 and 101 have no rtpmap and are not static: dropped.
    assert_eq!(
        m.codecs
            .iter()
            .map(|c| (c.pt, c.name.as_str(), c.clock_rate))
            .collect::<Vec<_>>(),
        [(0, "PCMU", 8000), (8, "PCMA", 8000)]
    );
    assert_eq!(m.codecs[0].rtcp_fb, ["nack", "trr-int 100"]);
    assert_eq!(m.codecs[1].rtcp_fb, ["nack"]);
}

#[test]
fn session_level_direction_is_the_media_default() {
    let text = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=recvonly\r\nm=audio 9 RTP/SAVPF 0\r\nm=video 9 RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\na=inactive\r\n";
    let sdp = SessionDescription::parse(text).unwrap();
    assert_eq!(sdp.media[0].direction, Direction::RecvOnly);
    assert_eq!(sdp.media[1].direction, Direction::Inactive);
}

fn syntax_error(text: &str) -> (usize, String) {
    match SessionDescription::parse(text) {
        Err(Error::Syntax { line, message }) => (line, message),
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn syntax_errors_name_the_line() {
    assert_eq!(syntax_error("").0, 0);
    let (line, msg) = syntax_error("hello world");
    assert_eq!(line, 1);
    assert!(msg.contains("`hello world`"), "{msg}");
    let (line, msg) = syntax_error("o=- 1 1 IN IP4 0.0.0.0\r\nv=0\r\n");
    assert_eq!(line, 1);
    assert!(msg.contains("v=0"), "{msg}");
    let (line, msg) = syntax_error(
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio nine RTP/SAVPF 0\r\n",
    );
    assert_eq!(line, 5);
    assert!(msg.contains("port `nine`"), "{msg}");
    let (line, msg) = syntax_error("v=0\r\nm=audio 9 RTP/SAVPF 111\r\na=rtpmap:111 opus\r\n");
    assert_eq!(line, 3);
    assert!(
        msg.contains("a=rtpmap:111 opus") && msg.contains("clock rate"),
        "{msg}"
    );
    let (line, msg) = syntax_error("v=0\r\nm=audio 9 RTP/SAVPF 111\r\na=rtpmap:300 opus/48000\r\n");
    assert_eq!(line, 3);
    assert!(msg.contains("0 to 127"), "{msg}");
    let (line, msg) = syntax_error("v=0\r\nm=audio 9 RTP/SAVPF 111\r\na=setup:sideways\r\n");
    assert_eq!(line, 3);
    assert!(msg.contains("sideways"), "{msg}");
    let (line, msg) = syntax_error("v=0\r\nm=video 9 RTP/SAVPF 96\r\na=ssrc:-5 cname:x\r\n");
    assert_eq!(line, 3);
    assert!(msg.contains("SSRC `-5`"), "{msg}");
    let (_, msg) =
        syntax_error("v=0\r\nm=video 9 RTP/SAVPF 96\r\na=candidate:1 1 udp 5 1.2.3.4 9 host\r\n");
    assert!(msg.contains("too few fields"), "{msg}");
    let err = SessionDescription::parse("v=0\r\nm=video 9 RTP/SAVPF 96\r\na=mid\r\n").unwrap_err();
    assert_eq!(err.to_string(), "SDP line 3: a=mid needs a value");
}
