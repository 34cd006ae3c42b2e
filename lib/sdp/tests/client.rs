//! The load generator's side: its publish offer through the server's answer, and back.

mod common;

use common::*;
use switchyard_sdp::{
    answer_publish, answer_subscribe_client, offer_publish_client, remote_transport, ClientTrack,
    Codec, Direction, Error, MediaKind, SessionDescription, Setup, CLIENT_EXT_IDS, FB_FIR, FB_NACK,
    FB_PLI, FB_TWCC,
};

fn tracks() -> Vec<ClientTrack> {
    vec![
        ClientTrack {
            mid: "0".into(),
            kind: MediaKind::Audio,
            ssrc: 1001,
            rids: vec![],
            feedback: 0,
            codec: Codec {
                pt: 111,
                name: "opus".into(),
                clock_rate: 48000,
                channels: Some(2),
                fmtp: Some("minptime=10;useinbandfec=1".into()),
                rtcp_fb: vec![],
            },
            stream_id: "loadgen-7".into(),
            track_id: "mic".into(),
            cname: "loadgen-7-cname".into(),
        },
        ClientTrack {
            mid: "1".into(),
            kind: MediaKind::Video,
            ssrc: 2002,
            rids: vec![],
            feedback: 0,
            codec: Codec {
                pt: 96,
                name: "VP8".into(),
                clock_rate: 90000,
                channels: None,
                fmtp: None,
                rtcp_fb: vec!["nack".into(), "nack pli".into(), "ccm fir".into()],
            },
            stream_id: "loadgen-7".into(),
            track_id: "cam".into(),
            cname: "loadgen-7-cname".into(),
        },
    ]
}

#[test]
fn client_offer_is_answered_with_the_same_tracks() {
    let tracks = tracks();
    let offer_text = offer_publish_client(&tracks, &client()).unwrap();
    let s = sections(&offer_text);
    assert!(s[0].contains(&"a=group:BUNDLE 0 1"));
    assert!(lines_with(&s[0], "a=ice-lite").is_empty());
    assert!(s[1].contains(&"a=setup:actpass") && s[1].contains(&"a=sendonly"));
    assert!(s[1].contains(&"a=candidate:1 1 udp 2130706431 198.51.100.7 50000 typ host"));
    assert!(s[2].contains(&"a=ssrc:2002 msid:loadgen-7 cam"));

    let offer = SessionDescription::parse(&offer_text).unwrap();
    // The client offers the extensions and feedback a browser offers, so the server keeps
    // NACK, PLI/FIR and TWCC.
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
        ["a=rtcp-fb:111 transport-cc"]
    );
    assert_eq!(lines_with(&s[2], "a=extmap").len(), 4);
    assert_eq!(
        lines_with(&s[2], "a=rtcp-fb"),
        [
            "a=rtcp-fb:96 nack",
            "a=rtcp-fb:96 nack pli",
            "a=rtcp-fb:96 ccm fir",
            "a=rtcp-fb:96 transport-cc"
        ]
    );
    let answered = answer_publish(&offer, &server()).unwrap();
    let (answer_text, accepted) = (answered.sdp, answered.tracks);
    assert_eq!(
        answered.ext, CLIENT_EXT_IDS,
        "every offered extension accepted"
    );
    let mut expected = tracks.clone();
    expected[0].codec.rtcp_fb = vec!["transport-cc".into()];
    expected[0].feedback = FB_TWCC;
    expected[1].codec.rtcp_fb.push("transport-cc".into());
    expected[1].feedback = FB_NACK | FB_PLI | FB_FIR | FB_TWCC;
    assert_eq!(
        accepted, expected,
        "the server accepts exactly what the client sends"
    );

    let answer = SessionDescription::parse(&answer_text).unwrap();
    let server_side = remote_transport(&answer).unwrap();
    assert_eq!(server_side.setup, Setup::Passive);
    assert_eq!(server_side.ice_ufrag, "sWy1");
    assert_eq!(
        server_side.fingerprint,
        format!("sha-256 {SERVER_FINGERPRINT}")
    );
    assert!(answer.ice_lite);
    assert_eq!(
        answer.media[0].candidates[0].socket_addr(),
        Some("203.0.113.10:40000".parse().unwrap())
    );
    // And the server reads the client's transport from the offer.
    let client_side = remote_transport(&offer).unwrap();
    assert_eq!(
        (client_side.ice_ufrag.as_str(), client_side.setup),
        ("cLi9", Setup::ActPass)
    );
}

#[test]
fn client_offer_input_errors() {
    assert!(matches!(
        offer_publish_client(&[], &client()),
        Err(Error::InvalidInput { .. })
    ));
    let mut twice = tracks();
    twice[1].mid = "0".into();
    assert!(offer_publish_client(&twice, &client()).is_err());
    let mut bad = tracks();
    bad[0].kind = MediaKind::Application;
    assert!(offer_publish_client(&bad, &client()).is_err());
    let mut local = client();
    local.ice_pwd = "with space".into();
    let err = offer_publish_client(&tracks(), &local).unwrap_err();
    assert!(err.to_string().contains("LocalTransport.ice_pwd"), "{err}");
    let mut local = client();
    local.ice_ufrag = "abc".into();
    let err = offer_publish_client(&tracks(), &local).unwrap_err();
    assert!(err.to_string().contains("4 to 256 ICE characters"), "{err}");
    let mut local = client();
    local.fingerprint_sha256 = format!("sha-256 {CLIENT_FINGERPRINT}");
    let err = offer_publish_client(&tracks(), &local).unwrap_err();
    assert!(
        err.to_string().contains("32 colon-separated hex bytes"),
        "{err}"
    );
    local.fingerprint_sha256 = CLIENT_FINGERPRINT[3..].into();
    assert!(offer_publish_client(&tracks(), &local).is_err());
}

#[test]
fn client_answer_to_a_chrome_style_offer_rejects_what_it_cannot_take() {
    // Answering a browser offer (as if the load generator were answering Chrome): the data
    // channel is rejected, audio/video accepted recvonly with every offered codec.
    let offer = parse(CHROME_OFFER);
    let text = answer_subscribe_client(&offer, &client()).unwrap();
    let answer = SessionDescription::parse(&text).unwrap();
    assert_eq!(answer.media.len(), 3);
    assert_eq!(answer.media[0].direction, Direction::RecvOnly);
    assert_eq!(answer.media[1].codecs.len(), 25);
    assert!(answer.media[2].is_rejected());
    assert_eq!(answer.bundle().unwrap(), ["0", "1"]);
    assert_eq!(remote_transport(&answer).unwrap().setup, Setup::Active);

    let active = crlf(CHROME_OFFER).replace("a=setup:actpass", "a=setup:active");
    let err = answer_subscribe_client(&SessionDescription::parse(&active).unwrap(), &client())
        .unwrap_err();
    assert!(matches!(err, Error::Setup { .. }), "{err}");
}

#[test]
fn client_simulcast_offer_round_trips() {
    let mut tracks = tracks();
    tracks[1].rids = vec!["l".into(), "m".into(), "h".into()];
    let text = offer_publish_client(&tracks, &client()).unwrap();
    let s = sections(&text);
    assert_eq!(
        lines_with(&s[2], "a=rid"),
        ["a=rid:l send", "a=rid:m send", "a=rid:h send"]
    );
    assert_eq!(lines_with(&s[2], "a=simulcast"), ["a=simulcast:send l;m;h"]);
    assert!(lines_with(&s[2], "a=ssrc").is_empty(), "{s:#?}");
    let answered = answer_publish(&SessionDescription::parse(&text).unwrap(), &server()).unwrap();
    let video = &answered.tracks[1];
    assert_eq!(
        (video.ssrc, video.rids.clone()),
        (0, tracks[1].rids.clone())
    );
    assert_eq!(video.cname, "loadgen-7-cname", "the audio SSRC's cname");
    assert_eq!(video.track_id, "cam");
    let a = sections(&answered.sdp);
    assert_eq!(
        lines_with(&a[2], "a=rid"),
        ["a=rid:l recv", "a=rid:m recv", "a=rid:h recv"]
    );
    assert_eq!(lines_with(&a[2], "a=simulcast"), ["a=simulcast:recv l;m;h"]);

    // Two simulcast tracks may both have SSRC 0; bad rids are refused.
    let mut two = tracks.clone();
    two[0] = tracks[1].clone();
    two[0].mid = "v0".into();
    offer_publish_client(&two, &client()).unwrap();
    let mut bad = tracks.clone();
    bad[1].rids = vec!["a".into(), "b".into(), "c".into(), "d".into()];
    assert!(offer_publish_client(&bad, &client()).is_err());
    bad[1].rids = vec!["has space".into()];
    assert!(offer_publish_client(&bad, &client()).is_err());
}

#[test]
fn client_answer_keeps_the_subscribe_extensions() {
    let offer = parse(CHROME_OFFER);
    let text = answer_subscribe_client(&offer, &client()).unwrap();
    let s = sections(&text);
    assert_eq!(
        lines_with(&s[1], "a=extmap"),
        [
            "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
            "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
            "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
        ],
        "abs-send-time declined"
    );
    assert!(s[2].contains(&"a=rtcp-fb:96 transport-cc"));
}
