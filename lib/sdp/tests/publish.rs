//! Answering publish offers from Chrome, Firefox and aiortc.

mod common;

use common::*;
use switchyard_sdp::{
    answer_publish, remote_transport, Codec, Direction, Error, MediaKind, PublishedTrack,
    SessionDescription, Setup,
};

const SERVER_CANDIDATE: &str = "a=candidate:1 1 udp 2130706431 203.0.113.10 40000 typ host";

fn answer(fixture: &str) -> (String, Vec<PublishedTrack>) {
    answer_publish(
        &SessionDescription::parse(&crlf(fixture)).unwrap(),
        &server(),
    )
    .unwrap()
}

fn answer_err(offer: &str) -> Error {
    answer_publish(&SessionDescription::parse(offer).unwrap(), &server()).unwrap_err()
}

/// Checks what every accepted m-section of a publish answer must hold.
fn assert_accepted_section(section: &[&str], kind: &str, mid: &str, pt: u8) {
    assert_eq!(section[0], format!("m={kind} 40000 UDP/TLS/RTP/SAVPF {pt}"));
    for line in [
        "c=IN IP4 203.0.113.10",
        "a=ice-ufrag:sWy1",
        "a=ice-pwd:Qm8rT2vX9kL4pN7cB3hJ6w",
        &format!("a=fingerprint:sha-256 {SERVER_FINGERPRINT}"),
        "a=setup:passive",
        &format!("a=mid:{mid}"),
        "a=recvonly",
        "a=rtcp-mux",
        SERVER_CANDIDATE,
        "a=end-of-candidates",
    ] {
        assert!(section.contains(&line), "missing {line:?} in {section:#?}");
    }
    assert_eq!(
        lines_with(section, "a=rtpmap:").len(),
        1,
        "one codec only: {section:#?}"
    );
    for absent in [
        "a=extmap",
        "a=ssrc",
        "a=msid",
        "a=sendrecv",
        "a=sendonly",
        "a=rtcp-rsize",
        "a=setup:act",
    ] {
        assert!(
            lines_with(section, absent).is_empty(),
            "unexpected {absent} in {section:#?}"
        );
    }
    assert!(!section
        .iter()
        .any(|l| l.contains("rtx") || l.contains("transport-cc") || l.contains("goog-remb")));
}

#[test]
fn chrome_publish_answer() {
    let (sdp, tracks) = answer(CHROME_OFFER);
    let s = sections(&sdp);
    assert_eq!(s.len(), 4, "session + three m-lines in the offer's order");
    let session = &s[0];
    assert_eq!(session[0], "v=0");
    assert_eq!(session[1], "o=switchyard 7001234567 1 IN IP4 203.0.113.10");
    assert!(session.contains(&"a=ice-lite"));
    assert!(
        session.contains(&"a=group:BUNDLE 0 1"),
        "datachannel mid 2 left out: {session:#?}"
    );
    assert!(!sdp.contains("a=extmap"));

    assert_accepted_section(&s[1], "audio", "0", 111);
    assert!(s[1].contains(&"a=rtpmap:111 opus/48000/2"));
    assert!(s[1].contains(&"a=fmtp:111 minptime=10;useinbandfec=1"));
    assert!(
        lines_with(&s[1], "a=rtcp-fb").is_empty(),
        "audio gets no feedback"
    );

    assert_accepted_section(&s[2], "video", "1", 96);
    assert!(s[2].contains(&"a=rtpmap:96 VP8/90000"));
    assert_eq!(
        lines_with(&s[2], "a=rtcp-fb"),
        [
            "a=rtcp-fb:96 ccm fir",
            "a=rtcp-fb:96 nack",
            "a=rtcp-fb:96 nack pli"
        ]
    );

    // The data channel keeps its place, rejected.
    assert_eq!(s[3][0], "m=application 0 UDP/DTLS/SCTP webrtc-datachannel");
    assert!(s[3].contains(&"a=mid:2"));
    assert!(lines_with(&s[3], "a=ice-").is_empty() && lines_with(&s[3], "a=candidate").is_empty());

    let stream = "3d5b8e2a-6f1c-4b7e-9a0d-2c8f1e4b7a6d";
    assert_eq!(
        tracks,
        vec![
            PublishedTrack {
                mid: "0".into(),
                kind: MediaKind::Audio,
                ssrc: 1129104006,
                codec: Codec {
                    pt: 111,
                    name: "opus".into(),
                    clock_rate: 48000,
                    channels: Some(2),
                    fmtp: Some("minptime=10;useinbandfec=1".into()),
                    rtcp_fb: vec![],
                },
                stream_id: stream.into(),
                track_id: "8a1f0c2e-5d3b-4e6f-a7b9-0c1d2e3f4a5b".into(),
                cname: "qH3T0dCvJ9r3xYpM".into(),
            },
            PublishedTrack {
                mid: "1".into(),
                kind: MediaKind::Video,
                ssrc: 2231627014,
                codec: Codec {
                    pt: 96,
                    name: "VP8".into(),
                    clock_rate: 90000,
                    channels: None,
                    fmtp: None,
                    rtcp_fb: vec!["ccm fir".into(), "nack".into(), "nack pli".into()],
                },
                stream_id: stream.into(),
                track_id: "5c6d7e8f-9a0b-4c1d-8e2f-3a4b5c6d7e8f".into(),
                cname: "qH3T0dCvJ9r3xYpM".into(),
            },
        ]
    );
}

#[test]
fn publish_answer_parses_back_as_the_server_transport() {
    let (sdp, _) = answer(CHROME_OFFER);
    let parsed = SessionDescription::parse(&sdp).unwrap();
    assert!(parsed.ice_lite);
    assert_eq!(parsed.media[1].direction, Direction::RecvOnly);
    assert_eq!(parsed.media[2].direction, Direction::Inactive);
    assert!(parsed.media[2].is_rejected());
    let t = remote_transport(&parsed).unwrap();
    assert_eq!(t.ice_ufrag, "sWy1");
    assert_eq!(t.ice_pwd, "Qm8rT2vX9kL4pN7cB3hJ6w");
    assert_eq!(t.fingerprint, format!("sha-256 {SERVER_FINGERPRINT}"));
    assert_eq!(t.setup, Setup::Passive);
}

/// Drops the given payload types from the Chrome offer's video m-line.
fn chrome_without(pts: &[&str]) -> String {
    let mut text = crlf(CHROME_OFFER);
    for pt in pts {
        text = text.replace(&format!(" {pt} "), " ");
        let lines: Vec<&str> = text
            .split("\r\n")
            .filter(|l| {
                !l.starts_with(&format!("a=rtpmap:{pt} "))
                    && !l.starts_with(&format!("a=fmtp:{pt} "))
                    && !l.starts_with(&format!("a=rtcp-fb:{pt} "))
            })
            .collect();
        text = lines.join("\r\n");
    }
    text
}

#[test]
fn h264_is_chosen_without_vp8_preferring_mode1_42e01f() {
    let offer = SessionDescription::parse(&chrome_without(&["96", "97"])).unwrap();
    assert!(offer.media[1].codec(96).is_none());
    let (sdp, tracks) = answer_publish(&offer, &server()).unwrap();
    let s = sections(&sdp);
    assert_accepted_section(&s[2], "video", "1", 106);
    assert!(s[2].contains(&"a=rtpmap:106 H264/90000"));
    assert!(s[2].contains(
        &"a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
    ));
    assert_eq!(tracks[1].codec.pt, 106);

    // Without 42e01f at packetization-mode=1, the first packetization-mode=1 H264 wins (102),
    // ahead of 42e01f in mode 0 (108).
    let offer = SessionDescription::parse(&chrome_without(&["96", "97", "106", "107"])).unwrap();
    let (sdp, tracks) = answer_publish(&offer, &server()).unwrap();
    assert_eq!(tracks[1].codec.pt, 102);
    assert!(sdp.contains(
        "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n"
    ));
}

#[test]
fn video_with_only_vp9_and_av1_is_rejected() {
    let offer = SessionDescription::parse(&chrome_without(&[
        "96", "97", "102", "103", "104", "105", "106", "107", "108", "109", "127", "125", "39",
        "40", "112", "113",
    ]))
    .unwrap();
    let (sdp, tracks) = answer_publish(&offer, &server()).unwrap();
    let s = sections(&sdp);
    assert!(
        s[2][0].starts_with("m=video 0 UDP/TLS/RTP/SAVPF 45 46 98"),
        "{}",
        s[2][0]
    );
    assert!(s[0].contains(&"a=group:BUNDLE 0"));
    assert_eq!(tracks.len(), 1);
    assert_eq!(tracks[0].kind, MediaKind::Audio);
}

#[test]
fn firefox_publish_answer() {
    let (sdp, tracks) = answer(FIREFOX_OFFER);
    let s = sections(&sdp);
    assert!(s[0].contains(&"a=group:BUNDLE 0 1") && s[0].contains(&"a=ice-lite"));
    assert_accepted_section(&s[1], "audio", "0", 109);
    assert!(s[1].contains(&"a=rtpmap:109 opus/48000/2"));
    assert!(s[1].contains(&"a=fmtp:109 maxplaybackrate=48000;stereo=1;useinbandfec=1"));
    assert_accepted_section(&s[2], "video", "1", 120);
    assert!(s[2].contains(&"a=rtpmap:120 VP8/90000"));
    assert!(s[2].contains(&"a=fmtp:120 max-fs=12288;max-fr=60"));
    assert_eq!(
        lines_with(&s[2], "a=rtcp-fb"),
        [
            "a=rtcp-fb:120 nack",
            "a=rtcp-fb:120 nack pli",
            "a=rtcp-fb:120 ccm fir"
        ]
    );
    let stream = "{6a1b6d5e-3c2f-4e8a-9b7d-1f0e2d3c4b5a}";
    let cname = "{2f5e1c7a-8b3d-4f6e-9a1c-5d7e3b2f8c4a}";
    assert_eq!(tracks.len(), 2);
    assert_eq!((tracks[0].ssrc, tracks[0].codec.pt), (3419232315, 109));
    assert_eq!((tracks[1].ssrc, tracks[1].codec.pt), (2717213384, 120));
    assert_eq!(tracks[1].stream_id, stream);
    assert_eq!(tracks[1].track_id, "{c3b2a190-8f7e-4d6c-5b4a-392817160504}");
    assert_eq!(tracks[0].cname, cname);
}

#[test]
fn aiortc_publish_answer() {
    let (sdp, tracks) = answer(AIORTC_OFFER);
    let s = sections(&sdp);
    assert!(s[0].contains(&"a=group:BUNDLE 0 1"));
    assert_accepted_section(&s[1], "audio", "0", 96);
    assert!(s[1].contains(&"a=rtpmap:96 opus/48000/2"));
    assert!(lines_with(&s[1], "a=fmtp").is_empty());
    assert_accepted_section(&s[2], "video", "1", 97);
    assert_eq!(
        lines_with(&s[2], "a=rtcp-fb"),
        ["a=rtcp-fb:97 nack", "a=rtcp-fb:97 nack pli"]
    );
    assert_eq!(tracks[0].ssrc, 1852336052);
    assert_eq!(
        tracks[1].ssrc, 2566163226,
        "the FID group's media SSRC, not the RTX one"
    );
    assert_eq!(tracks[1].stream_id, "5a0c8e2f-4b1d-4c3e-8f6a-7d9b2e1c0a3f");
    assert_eq!(tracks[1].cname, "2f9b0b5e-7c3a-4d1e-8b6f-5a4c3d2e1f0a");
}

#[test]
fn missing_ssrc_is_an_actionable_error() {
    let text: String = crlf(CHROME_OFFER)
        .split_inclusive("\r\n")
        .filter(|l| {
            !(l.starts_with("a=ssrc") && (l.contains("2231627014") || l.contains("632943048")))
        })
        .collect();
    let err = answer_err(&text);
    assert_eq!(
        err.to_string(),
        "m-line 1 (video): offer has no a=ssrc line; the server needs the SSRC of each sent track"
    );
    assert!(matches!(
        err,
        Error::Media {
            index: 1,
            kind: MediaKind::Video,
            ..
        }
    ));
}

#[test]
fn transport_problems_are_errors() {
    let chrome = crlf(CHROME_OFFER);
    let err = answer_err(&chrome.replace("a=setup:actpass", "a=setup:passive"));
    assert!(matches!(err, Error::Setup { .. }), "{err}");
    assert!(err.to_string().contains("a=setup:passive"), "{err}");

    let err = answer_err(&chrome.replace("a=rtcp-mux\r\n", ""));
    assert_eq!(err.to_string(), "m-line 0 (audio): has no a=rtcp-mux; the server requires RTP and RTCP on one port (rtcpMuxPolicy \"require\")");

    let err = answer_err(&chrome.replace("a=group:BUNDLE 0 1 2", "a=group:BUNDLE 0 2"));
    assert!(matches!(err, Error::Bundle { .. }), "{err}");
    assert!(err.to_string().contains("mid 1"), "{err}");

    let err = answer_err(&chrome.replace("a=group:BUNDLE 0 1 2\r\n", ""));
    assert!(matches!(err, Error::Bundle { .. }), "{err}");

    // Different credentials on the video m-line: two transports, which the server cannot run.
    let video_at = chrome.find("m=video").unwrap();
    let (head, tail) = chrome.split_at(video_at);
    let err = answer_err(&format!(
        "{head}{}",
        tail.replacen("a=ice-ufrag:Xk3d", "a=ice-ufrag:Zz9z", 1)
    ));
    assert_eq!(
        err,
        Error::TransportMismatch {
            attribute: "ice-ufrag",
            first: 0,
            other: 1
        }
    );

    let err = answer_err(&chrome.replace("a=ice-pwd:V9u6Tq2nJmGm3rKp8yWb1c0e\r\n", ""));
    assert!(err.to_string().contains("a=ice-pwd"), "{err}");

    let err = answer_err(&chrome.replace("a=mid:1", "a=mid:0"));
    assert!(err.to_string().contains("repeats a=mid:0"), "{err}");
}

#[test]
fn firefox_missing_session_fingerprint_is_reported() {
    let text = crlf(FIREFOX_OFFER);
    let without: String = text
        .split_inclusive("\r\n")
        .filter(|l| !l.starts_with("a=fingerprint"))
        .collect();
    let err = answer_err(&without);
    assert!(
        err.to_string()
            .contains("m-line 0 (audio): has no a=fingerprint"),
        "{err}"
    );
}

#[test]
fn nothing_acceptable_still_gives_a_valid_answer() {
    let text = crlf(CHROME_OFFER).replace("a=sendonly", "a=recvonly");
    let (sdp, tracks) =
        answer_publish(&SessionDescription::parse(&text).unwrap(), &server()).unwrap();
    assert!(tracks.is_empty());
    let s = sections(&sdp);
    assert_eq!(s.len(), 4);
    assert!(lines_with(&s[0], "a=group").is_empty());
    assert_eq!(
        s[1][0],
        "m=audio 0 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126"
    );
    assert_eq!(s[2][0].split(' ').nth(1), Some("0"));
    let parsed = SessionDescription::parse(&sdp).unwrap();
    assert!(parsed.media.iter().all(|m| m.is_rejected()));
}

#[test]
fn single_unbundled_m_line_is_accepted_without_a_group() {
    // One audio m-line, no BUNDLE group, session-level transport attributes.
    let text = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\na=fingerprint:sha-256 AB:CD\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:a\r\na=sendonly\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=ssrc:5 cname:x\r\n";
    let (sdp, tracks) =
        answer_publish(&SessionDescription::parse(text).unwrap(), &server()).unwrap();
    assert!(!sdp.contains("a=group"));
    assert_eq!(tracks.len(), 1);
    // No msid anywhere: no stream, a track id made from the SSRC.
    assert_eq!(
        (tracks[0].stream_id.as_str(), tracks[0].track_id.as_str()),
        ("-", "track-5")
    );
}

#[test]
fn tracks_sharing_an_ssrc_or_a_payload_type_are_refused() {
    let chrome = crlf(CHROME_OFFER);
    let err = answer_err(&chrome.replace("2231627014", "1129104006"));
    assert_eq!(
        err.to_string(),
        "m-line 1 (video): sends SSRC 1129104006 like m-line 0; each sent track needs its own SSRC"
    );
    // Opus moved onto 96, VP8's payload type.
    let clash = chrome
        .replace(
            "m=audio 9 UDP/TLS/RTP/SAVPF 111 ",
            "m=audio 9 UDP/TLS/RTP/SAVPF 96 ",
        )
        .replace("a=rtpmap:111 opus/48000/2", "a=rtpmap:96 opus/48000/2")
        .replace("a=fmtp:111 minptime", "a=fmtp:96 minptime");
    let err = answer_err(&clash);
    assert!(err.to_string().starts_with("m-line 1 (video): uses payload type 96 for VP8/90000 but m-line 0 uses it for opus/48000"), "{err}");
}
