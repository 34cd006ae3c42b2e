//! Subscribe offers: what they contain, round trips through our parser, browser answers.

mod common;

use common::*;
use switchyard_sdp::{
    answer_publish, answer_subscribe_client, check_subscribe_answer, offer_subscribe, Codec,
    Direction, Error, MediaKind, PublishedTrack, SessionDescription, Setup, SsrcInfo,
    SubscribeSlot,
};

fn published(fixture: &str) -> Vec<PublishedTrack> {
    answer_publish(&parse(fixture), &server()).unwrap().tracks
}

fn slot(mid: &str, kind: MediaKind, track: Option<PublishedTrack>) -> SubscribeSlot {
    SubscribeSlot {
        mid: mid.into(),
        kind,
        track,
    }
}

/// Chrome's audio and video, an inactive video slot, Firefox's audio.
fn slots() -> Vec<SubscribeSlot> {
    let chrome = published(CHROME_OFFER);
    let firefox = published(FIREFOX_OFFER);
    vec![
        slot("a1", MediaKind::Audio, Some(chrome[0].clone())),
        slot("v2", MediaKind::Video, Some(chrome[1].clone())),
        slot("v3", MediaKind::Video, None),
        slot("a4", MediaKind::Audio, Some(firefox[0].clone())),
    ]
}

/// What Chrome answers to a subscribe offer: recvonly (inactive for inactive slots),
/// `a=setup:active`, its own credentials on every m-line.
fn browser_answer(offer: &str, setup: &str) -> String {
    let offer = SessionDescription::parse(offer).unwrap();
    let mids: Vec<String> = offer.media.iter().filter_map(|m| m.mid.clone()).collect();
    let mut out = format!(
        "v=0\r\no=- 6543210987654321 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {}\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS\r\n",
        mids.join(" ")
    );
    for m in &offer.media {
        let codec = &m.codecs[0];
        out += &format!(
            "m={} 9 UDP/TLS/RTP/SAVPF {}\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n",
            m.kind, codec.pt
        );
        out += "a=ice-ufrag:bRoW\r\na=ice-pwd:Jf3kD9sL2mQ8wE4rT6yU1i\r\na=ice-options:trickle\r\n";
        out += &format!("a=fingerprint:sha-256 {CLIENT_FINGERPRINT}\r\na=setup:{setup}\r\n");
        let direction = if m.direction == Direction::Inactive {
            "inactive"
        } else {
            "recvonly"
        };
        out += &format!(
            "a=mid:{}\r\na={direction}\r\na=rtcp-mux\r\na=rtcp-rsize\r\n",
            m.mid.as_deref().unwrap()
        );
        match &codec.channels {
            Some(ch) => {
                out += &format!(
                    "a=rtpmap:{} {}/{}/{ch}\r\n",
                    codec.pt, codec.name, codec.clock_rate
                )
            }
            None => {
                out += &format!(
                    "a=rtpmap:{} {}/{}\r\n",
                    codec.pt, codec.name, codec.clock_rate
                )
            }
        }
        for fb in &codec.rtcp_fb {
            out += &format!("a=rtcp-fb:{} {fb}\r\n", codec.pt);
        }
        if let Some(fmtp) = &codec.fmtp {
            out += &format!("a=fmtp:{} {fmtp}\r\n", codec.pt);
        }
    }
    out
}

#[test]
fn offer_contents() {
    let slots = slots();
    let sdp = offer_subscribe(&slots, &server()).unwrap();
    let s = sections(&sdp);
    assert_eq!(s.len(), 5);
    assert!(s[0].contains(&"a=ice-lite"));
    assert!(s[0].contains(&"a=group:BUNDLE a1 v2 v3 a4"));
    assert!(s[0].contains(&"o=switchyard 7001234567 1 IN IP4 203.0.113.10"));
    for section in &s[1..] {
        for line in [
            "c=IN IP4 203.0.113.10",
            "a=ice-ufrag:sWy1",
            "a=ice-pwd:Qm8rT2vX9kL4pN7cB3hJ6w",
            &format!("a=fingerprint:sha-256 {SERVER_FINGERPRINT}"),
            "a=setup:actpass",
            "a=rtcp-mux",
            "a=candidate:1 1 udp 2130706431 203.0.113.10 40000 typ host",
            "a=end-of-candidates",
        ] {
            assert!(section.contains(&line), "missing {line:?} in {section:#?}");
        }
        assert!(
            section[0].contains(" 40000 "),
            "bundled m-lines keep the port: {}",
            section[0]
        );
    }
    let chrome_stream = "3d5b8e2a-6f1c-4b7e-9a0d-2c8f1e4b7a6d";
    let audio = &s[1];
    assert_eq!(audio[0], "m=audio 40000 UDP/TLS/RTP/SAVPF 111");
    for line in [
        "a=mid:a1".to_string(),
        "a=sendonly".into(),
        format!("a=msid:{chrome_stream} 8a1f0c2e-5d3b-4e6f-a7b9-0c1d2e3f4a5b"),
        "a=rtpmap:111 opus/48000/2".into(),
        "a=fmtp:111 minptime=10;useinbandfec=1".into(),
        "a=ssrc:1129104006 cname:qH3T0dCvJ9r3xYpM".into(),
        format!("a=ssrc:1129104006 msid:{chrome_stream} 8a1f0c2e-5d3b-4e6f-a7b9-0c1d2e3f4a5b"),
    ] {
        assert!(
            audio.contains(&line.as_str()),
            "missing {line:?} in {audio:#?}"
        );
    }
    let video = &s[2];
    assert_eq!(video[0], "m=video 40000 UDP/TLS/RTP/SAVPF 96");
    assert_eq!(
        lines_with(video, "a=rtcp-fb"),
        [
            "a=rtcp-fb:96 nack",
            "a=rtcp-fb:96 nack pli",
            "a=rtcp-fb:96 ccm fir",
            "a=rtcp-fb:96 transport-cc",
            "a=rtcp-fb:96 goog-remb"
        ],
        "the feedback the engine handles, not the publisher's"
    );
    assert_eq!(
        lines_with(video, "a=extmap"),
        ["a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"]
    );
    assert_eq!(
        lines_with(audio, "a=rtcp-fb"),
        ["a=rtcp-fb:111 transport-cc"]
    );
    assert_eq!(
        lines_with(audio, "a=extmap"),
        [
            "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
            "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
        ]
    );
    assert!(lines_with(video, "a=rid").is_empty() && lines_with(video, "a=simulcast").is_empty());
    assert_eq!(
        lines_with(video, "a=ssrc:"),
        [
            "a=ssrc:2231627014 cname:qH3T0dCvJ9r3xYpM".to_string(),
            format!("a=ssrc:2231627014 msid:{chrome_stream} 5c6d7e8f-9a0b-4c1d-8e2f-3a4b5c6d7e8f"),
        ]
    );
    // The inactive slot: bundle port, a=inactive, VP8 on the payload type slot v2 already uses.
    let idle = &s[3];
    assert_eq!(idle[0], "m=video 40000 UDP/TLS/RTP/SAVPF 96");
    assert!(idle.contains(&"a=inactive") && idle.contains(&"a=mid:v3"));
    assert_eq!(lines_with(idle, "a=extmap"), lines_with(video, "a=extmap"));
    assert_eq!(
        lines_with(idle, "a=rtcp-fb"),
        lines_with(video, "a=rtcp-fb")
    );
    assert!(lines_with(idle, "a=ssrc").is_empty() && lines_with(idle, "a=msid").is_empty());
    assert_eq!(s[4][0], "m=audio 40000 UDP/TLS/RTP/SAVPF 109");
    assert!(s[4].contains(&"a=fmtp:109 maxplaybackrate=48000;stereo=1;useinbandfec=1"));
}

#[test]
fn offer_round_trips_through_the_parser() {
    let slots = slots();
    let sdp = offer_subscribe(&slots, &server()).unwrap();
    let parsed = SessionDescription::parse(&sdp).unwrap();
    assert_eq!(
        parsed.to_sdp(),
        sdp,
        "the writer is stable on its own output"
    );
    assert!(parsed.ice_lite);
    assert_eq!(parsed.bundle().unwrap(), ["a1", "v2", "v3", "a4"]);
    assert_eq!(parsed.media.len(), slots.len());
    for (media, slot) in parsed.media.iter().zip(&slots) {
        assert_eq!(media.mid.as_deref(), Some(slot.mid.as_str()));
        assert_eq!(media.kind, slot.kind);
        assert_eq!(media.setup, Some(Setup::ActPass));
        assert!(media.rtcp_mux && !media.is_rejected());
        assert_eq!(media.candidates.len(), 1);
        assert_eq!(
            media.candidates[0].socket_addr(),
            Some("203.0.113.10:40000".parse().unwrap())
        );
        match &slot.track {
            Some(track) => {
                assert_eq!(media.direction, Direction::SendOnly);
                let mut codec = track.codec.clone();
                codec.rtcp_fb = if track.kind == MediaKind::Video {
                    ["nack", "nack pli", "ccm fir", "transport-cc", "goog-remb"]
                        .map(String::from)
                        .to_vec()
                } else {
                    vec!["transport-cc".into()]
                };
                assert_eq!(
                    media.codecs,
                    vec![codec],
                    "the publisher's codec, with the engine's feedback"
                );
                assert_eq!(
                    media.msid,
                    Some((track.stream_id.clone(), track.track_id.clone()))
                );
                assert_eq!(
                    media.ssrcs,
                    vec![SsrcInfo {
                        ssrc: track.ssrc,
                        cname: Some(track.cname.clone()),
                        msid_stream: Some(track.stream_id.clone()),
                        msid_track: Some(track.track_id.clone()),
                    }]
                );
            }
            None => {
                assert_eq!(media.direction, Direction::Inactive);
                assert!(media.ssrcs.is_empty() && media.msid.is_none());
                assert_eq!(media.codecs.len(), 1);
            }
        }
    }
}

#[test]
fn browser_answer_passes_the_check() {
    let slots = slots();
    let offer = offer_subscribe(&slots, &server()).unwrap();
    let answer = SessionDescription::parse(&browser_answer(&offer, "active")).unwrap();
    let remote = check_subscribe_answer(&slots, &answer).unwrap();
    assert_eq!(remote.ice_ufrag, "bRoW");
    assert_eq!(remote.ice_pwd, "Jf3kD9sL2mQ8wE4rT6yU1i");
    assert_eq!(remote.fingerprint, format!("sha-256 {CLIENT_FINGERPRINT}"));
    assert_eq!(remote.setup, Setup::Active);
}

#[test]
fn load_generator_answer_passes_the_check() {
    let slots = slots();
    let offer = SessionDescription::parse(&offer_subscribe(&slots, &server()).unwrap()).unwrap();
    let text = answer_subscribe_client(&offer, &client()).unwrap();
    let s = sections(&text);
    assert!(s[0].contains(&"a=group:BUNDLE a1 v2 v3 a4"));
    assert!(
        lines_with(&s[0], "a=ice-lite").is_empty(),
        "the client is a full ICE agent"
    );
    assert!(s[1].contains(&"a=recvonly") && s[1].contains(&"a=setup:active"));
    assert!(s[3].contains(&"a=inactive"));
    let answer = SessionDescription::parse(&text).unwrap();
    assert_eq!(answer.media[1].codecs, offer.media[1].codecs);
    let remote = check_subscribe_answer(&slots, &answer).unwrap();
    assert_eq!(remote.ice_ufrag, "cLi9");
    assert_eq!(remote.fingerprint, format!("sha-256 {CLIENT_FINGERPRINT}"));
}

#[test]
fn slots_can_go_inactive_and_be_reused() {
    let mut slots = slots();
    let first = offer_subscribe(&slots, &server()).unwrap();
    // Chrome's video leaves: slot v2 goes inactive, keeping its mid and place.
    let left = slots[1].track.take().unwrap();
    let second = offer_subscribe(&slots, &server()).unwrap();
    let parsed = SessionDescription::parse(&second).unwrap();
    assert_eq!(parsed.media[1].mid.as_deref(), Some("v2"));
    assert_eq!(parsed.media[1].direction, Direction::Inactive);
    assert_eq!(
        parsed.media[1].port, 40000,
        "not port 0: it stays in the BUNDLE group"
    );
    assert!(!second.contains(&left.ssrc.to_string()));
    assert_eq!(parsed.bundle().unwrap(), ["a1", "v2", "v3", "a4"]);
    // No track uses VP8 any more: the placeholder takes VP8's default payload type 96.
    assert_eq!(parsed.media[1].codecs[0].pt, 96);
    assert!(parsed.media[1].codecs[0].is("VP8"));
    // A new video publisher (aiortc, VP8 on 97) takes slot v3; v2 gets Firefox's video.
    let aiortc = published(AIORTC_OFFER);
    let firefox = published(FIREFOX_OFFER);
    slots[2].track = Some(aiortc[1].clone());
    slots[1].track = Some(firefox[1].clone());
    let third = offer_subscribe(&slots, &server()).unwrap();
    let parsed = SessionDescription::parse(&third).unwrap();
    assert_eq!(
        parsed
            .media
            .iter()
            .map(|m| m.mid.clone().unwrap())
            .collect::<Vec<_>>(),
        ["a1", "v2", "v3", "a4"]
    );
    assert_eq!(parsed.media[1].primary_ssrc(), Some(2717213384));
    assert_eq!(parsed.media[1].codecs[0].pt, 120);
    assert_eq!(parsed.media[2].primary_ssrc(), Some(2566163226));
    assert_eq!(parsed.media[2].codecs[0].pt, 97);
    assert_ne!(first, third);
    let answer = SessionDescription::parse(&browser_answer(&third, "active")).unwrap();
    check_subscribe_answer(&slots, &answer).unwrap();
}

#[test]
fn mismatched_answers_are_refused() {
    let slots = slots();
    let offer = offer_subscribe(&slots, &server()).unwrap();
    let good = browser_answer(&offer, "active");

    let err = check_subscribe_answer(
        &slots,
        &SessionDescription::parse(&browser_answer(&offer, "passive")).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Setup { .. }));
    assert_eq!(err.to_string(), "the answer has a=setup:passive; the server is always the DTLS server, so the answer must use a=setup:active");

    let err = check_subscribe_answer(
        &slots,
        &SessionDescription::parse(&browser_answer(&offer, "actpass")).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Setup { .. }));

    let swapped = good
        .replace("a=mid:v2", "a=mid:XX")
        .replace("a=mid:v3", "a=mid:v2")
        .replace("a=mid:XX", "a=mid:v3");
    let err =
        check_subscribe_answer(&slots, &SessionDescription::parse(&swapped).unwrap()).unwrap_err();
    assert!(matches!(err, Error::AnswerMismatch { .. }));
    assert!(err.to_string().starts_with("m-line 1 of the answer is video with mid v3 where the subscribe offer has video with mid v2"), "{err}");

    // An answer to an older offer with fewer slots.
    let err = check_subscribe_answer(&slots[..3], &SessionDescription::parse(&good).unwrap())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("4 m-lines but the subscribe offer has 3"),
        "{err}"
    );

    let sendrecv = good.replacen("a=recvonly", "a=sendrecv", 1);
    let err =
        check_subscribe_answer(&slots, &SessionDescription::parse(&sendrecv).unwrap()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("m-line 0 (audio): the answer has a=sendrecv"),
        "{err}"
    );

    let no_mux = good.replace("a=rtcp-mux\r\n", "");
    assert!(check_subscribe_answer(&slots, &SessionDescription::parse(&no_mux).unwrap()).is_err());

    let unbundled = good.replace("a=group:BUNDLE a1 v2 v3 a4", "a=group:BUNDLE a1 v2 v3");
    let err = check_subscribe_answer(&slots, &SessionDescription::parse(&unbundled).unwrap())
        .unwrap_err();
    assert!(matches!(err, Error::Bundle { .. }), "{err}");

    let no_fingerprint: String = good
        .split_inclusive("\r\n")
        .filter(|l| !l.starts_with("a=fingerprint"))
        .collect();
    let err = check_subscribe_answer(&slots, &SessionDescription::parse(&no_fingerprint).unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("a=fingerprint"), "{err}");
}

#[test]
fn a_rejected_slot_in_the_answer_is_allowed() {
    let slots = slots();
    let offer = offer_subscribe(&slots, &server()).unwrap();
    // The browser cannot decode the video: it rejects m-line 1 and drops it from its BUNDLE group.
    let answer = browser_answer(&offer, "active")
        .replacen(
            "m=video 9 UDP/TLS/RTP/SAVPF 96",
            "m=video 0 UDP/TLS/RTP/SAVPF 96",
            1,
        )
        .replace("a=group:BUNDLE a1 v2 v3 a4", "a=group:BUNDLE a1 v3 a4");
    let answer = SessionDescription::parse(&answer).unwrap();
    check_subscribe_answer(&slots, &answer).unwrap();
    assert!(answer.media[1].is_rejected());
}

fn invalid(slots: &[SubscribeSlot]) -> String {
    match offer_subscribe(slots, &server()) {
        Err(e @ Error::InvalidInput { .. }) => e.to_string(),
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

#[test]
fn bad_slot_lists_are_refused() {
    assert!(invalid(&[]).contains("at least one slot"));
    let chrome = published(CHROME_OFFER);
    let audio = chrome[0].clone();
    let msg = invalid(&[
        slot("x", MediaKind::Audio, Some(audio.clone())),
        slot("x", MediaKind::Video, None),
    ]);
    assert!(msg.contains("mid x"), "{msg}");
    let msg = invalid(&[slot("v", MediaKind::Video, Some(audio.clone()))]);
    assert!(msg.contains("is video but its track"), "{msg}");
    let msg = invalid(&[
        slot("a", MediaKind::Audio, Some(audio.clone())),
        slot("b", MediaKind::Audio, Some(audio.clone())),
    ]);
    assert!(msg.contains("both forward SSRC 1129104006"), "{msg}");
    let msg = invalid(&[slot("d", MediaKind::Application, None)]);
    assert!(msg.contains("only audio and video"), "{msg}");
    let msg = invalid(&[slot("has space", MediaKind::Audio, None)]);
    assert!(msg.contains("mid"), "{msg}");
    let mut evil = audio.clone();
    evil.track_id = "t\r\na=setup:active".into();
    assert!(invalid(&[slot("a", MediaKind::Audio, Some(evil))]).contains("track id"));
    let mut evil = audio.clone();
    evil.codec.fmtp = Some("minptime=10\r\na=inactive".into());
    assert!(invalid(&[slot("a", MediaKind::Audio, Some(evil))]).contains("fmtp"));
}

#[test]
fn clashing_payload_types_are_refused() {
    // aiortc's Opus is on 96, Chrome's VP8 too: browsers refuse one payload type for two codecs
    // in a BUNDLE group, and the engine forwards payload types unchanged.
    let aiortc = published(AIORTC_OFFER);
    let chrome = published(CHROME_OFFER);
    let msg = invalid(&[
        slot("a", MediaKind::Audio, Some(aiortc[0].clone())),
        slot("v", MediaKind::Video, Some(chrome[1].clone())),
    ]);
    assert!(msg.contains("both use payload type 96"), "{msg}");
    // The same codec on the same payload type is fine, even with fmtp parameters reordered.
    let mut other = chrome[0].clone();
    other.ssrc = 7;
    other.codec.fmtp = Some("useinbandfec=1; minptime=10".into());
    offer_subscribe(
        &[
            slot("a", MediaKind::Audio, Some(chrome[0].clone())),
            slot("b", MediaKind::Audio, Some(other)),
        ],
        &server(),
    )
    .unwrap();
    // An inactive slot's placeholder avoids payload types in use by other codecs.
    let sdp = offer_subscribe(
        &[
            slot("a", MediaKind::Audio, Some(aiortc[0].clone())),
            slot("v", MediaKind::Video, None),
        ],
        &server(),
    )
    .unwrap();
    let parsed = SessionDescription::parse(&sdp).unwrap();
    assert_eq!(
        parsed.media[1].codecs[0].pt, 97,
        "96 is Opus here: VP8 moves to the next free one"
    );
}

#[test]
fn placeholder_for_an_audio_only_slot_list() {
    let sdp = offer_subscribe(&[slot("0", MediaKind::Audio, None)], &server()).unwrap();
    let parsed = SessionDescription::parse(&sdp).unwrap();
    assert_eq!(
        parsed.media[0].codecs,
        vec![Codec {
            pt: 111,
            name: "opus".into(),
            clock_rate: 48000,
            channels: Some(2),
            fmtp: Some("minptime=10;useinbandfec=1".into()),
            rtcp_fb: vec!["transport-cc".into()],
        }]
    );
    assert_eq!(parsed.media[0].direction, Direction::Inactive);
}

#[test]
fn simulcast_track_is_offered_as_one_stream_with_the_outgoing_ssrc() {
    let tracks = published(CHROME_SIMULCAST_OFFER);
    let mut video = tracks[1].clone();
    assert_eq!((video.ssrc, video.rids.len()), (0, 3));
    // Without an outgoing SSRC the track cannot be offered.
    let msg = invalid(&[slot("v", MediaKind::Video, Some(video.clone()))]);
    assert!(
        msg.contains("SSRC is 0") && msg.contains("out_ssrc"),
        "{msg}"
    );
    video.ssrc = 0x1234_5678;
    let sdp = offer_subscribe(
        &[
            slot("a", MediaKind::Audio, Some(tracks[0].clone())),
            slot("v", MediaKind::Video, Some(video.clone())),
        ],
        &server(),
    )
    .unwrap();
    let s = sections(&sdp);
    let cname = "Zt5kP9wQ2xVb7NmR";
    assert_eq!(
        lines_with(&s[2], "a=ssrc"),
        [
            format!("a=ssrc:305419896 cname:{cname}"),
            format!(
                "a=ssrc:305419896 msid:{} {}",
                video.stream_id, video.track_id
            ),
        ],
        "one SSRC, the publisher's cname (lip sync with its audio)"
    );
    assert_eq!(
        s[1].iter()
            .filter(|l| l.contains(&format!("cname:{cname}")))
            .count(),
        1
    );
    for absent in ["a=rid", "a=simulcast", "a=ssrc-group"] {
        assert!(
            lines_with(&s[2], absent).is_empty(),
            "{absent} in {:#?}",
            s[2]
        );
    }
    let parsed = SessionDescription::parse(&sdp).unwrap();
    assert_eq!(parsed.media[1].primary_ssrc(), Some(0x1234_5678));
    let answer = SessionDescription::parse(&browser_answer(&sdp, "active")).unwrap();
    let slots = [
        slot("a", MediaKind::Audio, Some(tracks[0].clone())),
        slot("v", MediaKind::Video, Some(video)),
    ];
    check_subscribe_answer(&slots, &answer).unwrap();
}

#[test]
fn answers_without_the_extensions_or_feedback_still_pass() {
    let slots = slots();
    let offer = offer_subscribe(&slots, &server()).unwrap();
    let answer: String = browser_answer(&offer, "active")
        .split_inclusive("\r\n")
        .filter(|l| !l.starts_with("a=extmap") && !l.starts_with("a=rtcp-fb"))
        .collect();
    check_subscribe_answer(&slots, &SessionDescription::parse(&answer).unwrap()).unwrap();
    // And with them (as Chrome answers: the extmaps echoed).
    let with: String = browser_answer(&offer, "active").replace(
        "a=rtcp-mux\r\n",
        "a=rtcp-mux\r\na=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n",
    );
    let parsed = SessionDescription::parse(&with).unwrap();
    assert_eq!(parsed.media[0].extmaps.len(), 1);
    check_subscribe_answer(&slots, &parsed).unwrap();
}
