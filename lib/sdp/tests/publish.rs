//! Answering publish offers from Chrome, Firefox and aiortc.

mod common;

use common::*;
use switchyard_sdp::{
    answer_publish, remote_transport, Codec, Direction, Error, ExtIds, MediaKind, PublishAnswer,
    PublishedTrack, SessionDescription, Setup, FB_FIR, FB_NACK, FB_PLI, FB_TWCC, URI_AUDIO_LEVEL,
    URI_MID, URI_REPAIRED_RID, URI_RID, URI_TWCC,
};

const SERVER_CANDIDATE: &str = "a=candidate:1 1 udp 2130706431 203.0.113.10 40000 typ host";

fn answer(fixture: &str) -> (String, Vec<PublishedTrack>) {
    let a = answer_publish(
        &SessionDescription::parse(&crlf(fixture)).unwrap(),
        &server(),
    )
    .unwrap();
    (a.sdp, a.tracks)
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
    assert!(
        !section.iter().any(|l| l.contains("rtx")
            || l.contains("red/")
            || l.contains("ulpfec")
            || l.contains("goog-remb")
            || l.contains("abs-send-time")),
        "no RTX, FEC, REMB or other extensions: {section:#?}"
    );
    for ext in lines_with(section, "a=extmap:") {
        let uri = ext.split(' ').nth(1).unwrap();
        assert!(
            [
                URI_MID,
                URI_RID,
                URI_REPAIRED_RID,
                URI_AUDIO_LEVEL,
                URI_TWCC
            ]
            .contains(&uri),
            "unexpected {ext}"
        );
    }
}

#[test]
fn chrome_publish_answer() {
    let PublishAnswer { sdp, tracks, ext } =
        answer_publish(&parse(CHROME_OFFER), &server()).unwrap();
    assert_eq!(
        ext,
        ExtIds {
            mid: 4,
            rid: 10,
            repaired_rid: 11,
            audio_level: 1,
            twcc: 3
        }
    );
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
    assert!(!sdp.contains("a=extmap-allow-mixed"));

    assert_accepted_section(&s[1], "audio", "0", 111);
    assert!(s[1].contains(&"a=rtpmap:111 opus/48000/2"));
    assert!(s[1].contains(&"a=fmtp:111 minptime=10;useinbandfec=1"));
    assert_eq!(
        lines_with(&s[1], "a=extmap"),
        [
            "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
            "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
            "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
        ]
    );
    assert_eq!(
        lines_with(&s[1], "a=rtcp-fb"),
        ["a=rtcp-fb:111 transport-cc"],
        "audio keeps only TWCC"
    );

    assert_accepted_section(&s[2], "video", "1", 96);
    assert!(s[2].contains(&"a=rtpmap:96 VP8/90000"));
    assert_eq!(
        lines_with(&s[2], "a=extmap"),
        [
            "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
            "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
            "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
            "a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
        ],
        "the offer's ids and order, the rest declined"
    );
    assert_eq!(
        lines_with(&s[2], "a=rtcp-fb"),
        [
            "a=rtcp-fb:96 transport-cc",
            "a=rtcp-fb:96 ccm fir",
            "a=rtcp-fb:96 nack",
            "a=rtcp-fb:96 nack pli"
        ]
    );
    assert!(lines_with(&s[2], "a=rid").is_empty() && lines_with(&s[2], "a=simulcast").is_empty());

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
                rids: vec![],
                codec: Codec {
                    pt: 111,
                    name: "opus".into(),
                    clock_rate: 48000,
                    channels: Some(2),
                    fmtp: Some("minptime=10;useinbandfec=1".into()),
                    rtcp_fb: vec!["transport-cc".into()],
                },
                feedback: FB_TWCC,
                stream_id: stream.into(),
                track_id: "8a1f0c2e-5d3b-4e6f-a7b9-0c1d2e3f4a5b".into(),
                cname: "qH3T0dCvJ9r3xYpM".into(),
            },
            PublishedTrack {
                mid: "1".into(),
                kind: MediaKind::Video,
                ssrc: 2231627014,
                rids: vec![],
                codec: Codec {
                    pt: 96,
                    name: "VP8".into(),
                    clock_rate: 90000,
                    channels: None,
                    fmtp: None,
                    rtcp_fb: vec![
                        "transport-cc".into(),
                        "ccm fir".into(),
                        "nack".into(),
                        "nack pli".into()
                    ],
                },
                feedback: FB_NACK | FB_PLI | FB_FIR | FB_TWCC,
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
    let PublishAnswer { sdp, tracks, .. } = answer_publish(&offer, &server()).unwrap();
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
    let PublishAnswer { sdp, tracks, .. } = answer_publish(&offer, &server()).unwrap();
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
    let PublishAnswer { sdp, tracks, .. } = answer_publish(&offer, &server()).unwrap();
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
            "a=rtcp-fb:120 ccm fir",
            "a=rtcp-fb:120 transport-cc"
        ]
    );
    // Firefox's csrc-audio-level is recvonly (it does not send it): declined.
    assert_eq!(
        lines_with(&s[1], "a=extmap"),
        [
            "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
            "a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid"
        ]
    );
    assert_eq!(
        lines_with(&s[2], "a=extmap"),
        [
            "a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid",
            "a=extmap:7 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
        ]
    );
    assert!(
        lines_with(&s[1], "a=rtcp-fb").is_empty(),
        "Firefox offers no audio feedback"
    );
    assert_eq!(tracks[0].feedback, 0);
    assert_eq!(tracks[1].feedback, FB_NACK | FB_PLI | FB_FIR | FB_TWCC);
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
        ["a=rtcp-fb:97 nack", "a=rtcp-fb:97 nack pli"],
        "no transport-cc offered, goog-remb declined"
    );
    assert_eq!(
        lines_with(&s[1], "a=extmap"),
        [
            "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
            "a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level"
        ]
    );
    assert_eq!(
        lines_with(&s[2], "a=extmap"),
        ["a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid"]
    );
    assert_eq!(tracks[1].feedback, FB_NACK | FB_PLI);
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
    let PublishAnswer { sdp, tracks, .. } =
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
    let PublishAnswer { sdp, tracks, .. } =
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

fn simulcast_answer(text: &str) -> Result<PublishAnswer, Error> {
    answer_publish(&SessionDescription::parse(text)?, &server())
}

#[test]
fn chrome_simulcast_publish_answer() {
    let PublishAnswer { sdp, tracks, ext } =
        answer_publish(&parse(CHROME_SIMULCAST_OFFER), &server()).unwrap();
    assert_eq!(
        ext,
        ExtIds {
            mid: 4,
            rid: 10,
            repaired_rid: 11,
            audio_level: 1,
            twcc: 3
        }
    );
    let s = sections(&sdp);
    assert_eq!(s.len(), 3);
    assert!(s[0].contains(&"a=group:BUNDLE 0 1"));
    assert_accepted_section(&s[1], "audio", "0", 111);
    assert_accepted_section(&s[2], "video", "1", 96);
    let video = &s[2];
    assert_eq!(
        lines_with(video, "a=extmap"),
        [
            "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
            "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
            "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
            "a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
        ],
        "toffset, abs-send-time, dependency descriptor, layers allocation... declined"
    );
    assert_eq!(
        lines_with(video, "a=rid"),
        ["a=rid:q recv", "a=rid:h recv", "a=rid:f recv"]
    );
    assert_eq!(lines_with(video, "a=simulcast"), ["a=simulcast:recv q;h;f"]);
    assert_eq!(
        lines_with(video, "a=rtcp-fb"),
        [
            "a=rtcp-fb:96 transport-cc",
            "a=rtcp-fb:96 ccm fir",
            "a=rtcp-fb:96 nack",
            "a=rtcp-fb:96 nack pli"
        ]
    );
    // The answer parses back with the simulcast attributes where the model keeps them.
    let parsed = SessionDescription::parse(&sdp).unwrap();
    assert_eq!(parsed.media[1].rids, ["q recv", "h recv", "f recv"]);
    assert_eq!(parsed.media[1].simulcast.as_deref(), Some("recv q;h;f"));
    assert_eq!(parsed.media[1].codecs.len(), 1);

    let stream = "e1c7a9f2-3b4d-4c6e-8f0a-1b2c3d4e5f60";
    assert_eq!(tracks.len(), 2);
    assert_eq!((tracks[0].ssrc, tracks[0].rids.len()), (3735928559, 0));
    assert_eq!(tracks[0].feedback, FB_TWCC);
    assert_eq!(
        tracks[1],
        PublishedTrack {
            mid: "1".into(),
            kind: MediaKind::Video,
            ssrc: 0,
            rids: vec!["q".into(), "h".into(), "f".into()],
            codec: Codec {
                pt: 96,
                name: "VP8".into(),
                clock_rate: 90000,
                channels: None,
                fmtp: None,
                rtcp_fb: vec![
                    "transport-cc".into(),
                    "ccm fir".into(),
                    "nack".into(),
                    "nack pli".into()
                ],
            },
            feedback: FB_NACK | FB_PLI | FB_FIR | FB_TWCC,
            stream_id: stream.into(),
            track_id: "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d".into(),
            cname: "Zt5kP9wQ2xVb7NmR".into(),
        }
    );
}

#[test]
fn simulcast_variants_chrome_and_others_write() {
    let base = crlf(CHROME_SIMULCAST_OFFER);
    // Restrictions on the rids, and a layer paused with `~`: the rid is kept, without the `~`.
    let text = base
        .replace(
            "a=rid:q send\r\n",
            "a=rid:q send max-width=320;max-height=180\r\n",
        )
        .replace("a=simulcast:send q;h;f", "a=simulcast:send ~q;h;~f");
    let a = simulcast_answer(&text).unwrap();
    assert_eq!(a.tracks[1].rids, ["q", "h", "f"]);
    let s = sections(&a.sdp);
    assert_eq!(
        lines_with(&s[2], "a=rid"),
        ["a=rid:q recv", "a=rid:h recv", "a=rid:f recv"],
        "restrictions are not echoed"
    );
    assert_eq!(lines_with(&s[2], "a=simulcast"), ["a=simulcast:recv q;h;f"]);

    // A recv list in the offer (the offerer would also receive simulcast) is ignored.
    let text = base.replace("a=simulcast:send q;h;f", "a=simulcast:send q;h;f recv x");
    assert_eq!(
        simulcast_answer(&text).unwrap().tracks[1].rids,
        ["q", "h", "f"]
    );

    // Four layers: the first three (the lowest) are kept and the answer lists only them.
    let text = base
        .replace("a=rid:f send\r\n", "a=rid:f send\r\na=rid:u send\r\n")
        .replace("a=simulcast:send q;h;f", "a=simulcast:send q;h;f;u");
    let a = simulcast_answer(&text).unwrap();
    assert_eq!(a.tracks[1].rids, ["q", "h", "f"]);
    assert!(a.sdp.contains("a=simulcast:recv q;h;f\r\n") && !a.sdp.contains("a=rid:u"));

    // Chrome versions that also list the layers' SSRCs (SIM and FID groups): still by rid, ssrc 0.
    let text = base.replace(
        "a=rid:q send\r\n",
        "a=ssrc-group:SIM 11 22 33\r\na=ssrc-group:FID 11 44\r\na=ssrc:11 cname:Zt5kP9wQ2xVb7NmR\r\na=ssrc:22 cname:Zt5kP9wQ2xVb7NmR\r\na=ssrc:33 cname:Zt5kP9wQ2xVb7NmR\r\na=ssrc:44 cname:Zt5kP9wQ2xVb7NmR\r\na=rid:q send\r\n",
    );
    let a = simulcast_answer(&text).unwrap();
    assert_eq!((a.tracks[1].ssrc, a.tracks[1].rids.len()), (0, 3));
    assert!(!a.sdp.contains("a=ssrc"));

    // Firefox writes its rids the same way (`a=simulcast:send a;b;c`).
    let text = base
        .replace("a=rid:q send", "a=rid:a send")
        .replace("a=rid:h send", "a=rid:b send")
        .replace("a=rid:f send", "a=rid:c send")
        .replace("a=simulcast:send q;h;f", "a=simulcast:send a;b;c");
    assert_eq!(
        simulcast_answer(&text).unwrap().tracks[1].rids,
        ["a", "b", "c"]
    );
}

#[test]
fn simulcast_without_the_mid_or_rid_extension_is_refused() {
    let base = crlf(CHROME_SIMULCAST_OFFER);
    let video_at = base.find("m=video").unwrap();
    let (head, tail) = base.split_at(video_at);
    let without = |line: &str| format!("{head}{}", tail.replace(line, ""));

    let err = simulcast_answer(&without(
        "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n",
    ))
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Media {
                index: 1,
                kind: MediaKind::Video,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "m-line 1 (video): offers simulcast (a=simulcast:send q;h;f) without both the urn:ietf:params:rtp-hdrext:sdes:mid and urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id header extensions (a=extmap with an id from 1 to 14); the server tells simulcast layers apart by them"
    );
    let err = simulcast_answer(&without(
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n",
    ))
    .unwrap_err();
    assert!(err.to_string().contains("offers simulcast"), "{err}");
    // A two-byte id cannot be used either.
    let two_byte = format!(
        "{head}{}",
        tail.replace(
            "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
            "a=extmap:20 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
        )
    );
    let err = simulcast_answer(&two_byte).unwrap_err();
    assert!(err.to_string().contains("offers simulcast"), "{err}");
}

#[test]
fn malformed_simulcast_is_refused() {
    let base = crlf(CHROME_SIMULCAST_OFFER);
    let err_for = |from: &str, to: &str| {
        assert!(base.contains(from), "{from}");
        simulcast_answer(&base.replace(from, to))
            .unwrap_err()
            .to_string()
    };
    let e = err_for("a=simulcast:send q;h;f", "a=simulcast:send q,x;h;f");
    assert!(
        e.starts_with("m-line 1 (video): a=simulcast:send q,x;h;f offers alternatives"),
        "{e}"
    );
    let e = err_for("a=simulcast:send q;h;f", "a=simulcast:send q;h;f;g");
    assert!(
        e.contains("lists rid g but the m-line has no `a=rid:g send` line"),
        "{e}"
    );
    let e = err_for("a=rid:h send", "a=rid:h recv");
    assert!(e.contains("no `a=rid:h send` line"), "{e}");
    let e = err_for("a=simulcast:send q;h;f", "a=simulcast:send q;h;q");
    assert!(e.contains("lists rid q twice"), "{e}");
    let e = err_for("a=simulcast:send q;h;f", "a=simulcast:q;h;f");
    assert!(e.contains("needs `send <rid>;<rid>...`"), "{e}");
    let e = err_for("a=simulcast:send q;h;f", "a=simulcast:send q;;f");
    assert!(e.contains("`` is not a rid"), "{e}");
    // rids without a simulcast list: not simulcast, so the SSRC is needed.
    let e = err_for("a=simulcast:send q;h;f\r\n", "");
    assert_eq!(e, "m-line 1 (video): offer has no a=ssrc line (it has a=rid lines but no a=simulcast:send list); the server needs the SSRC of each sent track");
}

#[test]
fn transport_cc_needs_the_twcc_extension() {
    let chrome = crlf(CHROME_OFFER).replace(
        "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n",
        "",
    );
    let a = answer_publish(&SessionDescription::parse(&chrome).unwrap(), &server()).unwrap();
    assert_eq!(a.ext.twcc, 0);
    assert!(!a.sdp.contains("transport-cc"), "{}", a.sdp);
    assert_eq!(a.tracks[0].feedback, 0);
    assert_eq!(a.tracks[1].feedback, FB_NACK | FB_PLI | FB_FIR);
    assert_eq!(a.tracks[1].codec.rtcp_fb, ["ccm fir", "nack", "nack pli"]);
    // An id outside 1-14 is declined the same way.
    let chrome = crlf(CHROME_OFFER).replace(
        "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
        "a=extmap:15 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    );
    let a = answer_publish(&SessionDescription::parse(&chrome).unwrap(), &server()).unwrap();
    assert_eq!((a.ext.twcc, a.ext.mid), (0, 4));
    assert!(!a.sdp.contains("transport-wide-cc") && !a.sdp.contains("transport-cc"));
}

#[test]
fn extension_ids_must_agree_across_the_bundle() {
    let chrome = crlf(CHROME_OFFER);
    let video_at = chrome.find("m=video").unwrap();
    let (head, tail) = chrome.split_at(video_at);
    // The video m-line gives sdes:mid another id than the audio m-line.
    let text = format!(
        "{head}{}",
        tail.replace(
            "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
            "a=extmap:9 urn:ietf:params:rtp-hdrext:sdes:mid"
        )
    );
    let err = answer_err(&text);
    assert_eq!(err.to_string(), "m-line 1 (video): uses extmap id 9 for urn:ietf:params:rtp-hdrext:sdes:mid but m-line 0 uses id 4; the server needs one id per header extension across the BUNDLE group");
    // The video m-line uses the audio level's id for transport-wide-cc.
    let text = format!(
        "{head}{}",
        tail.replace("a=extmap:3 http", "a=extmap:1 http")
    );
    let err = answer_err(&text);
    assert!(
        err.to_string().starts_with("m-line 1 (video): uses extmap id 1 for http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01 but m-line 0 uses it for urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
        "{err}"
    );
}

#[test]
fn aiortc_extension_ids_and_ssrc_zero() {
    let a = answer_publish(&parse(AIORTC_OFFER), &server()).unwrap();
    assert_eq!(
        a.ext,
        ExtIds {
            mid: 1,
            audio_level: 2,
            ..ExtIds::default()
        }
    );
    let err = answer_err(&crlf(CHROME_OFFER).replace("1129104006", "0"));
    assert!(
        err.to_string()
            .starts_with("m-line 0 (audio): sends SSRC 0"),
        "{err}"
    );
}
