//! Messages written by this crate parse back with the same content, and
//! their MESSAGE-INTEGRITY / FINGERPRINT verify only with the right key.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use switchyard_stun::{
    binding_response_address, is_stun, split_username, write_binding_error, write_binding_success,
    write_plain_binding_request, AttrType, BindingRequest, Class, Error, ErrorCode, Message,
    MessageType, MessageWriter, Method,
};

const SERVER_PWD: &[u8] = b"serverPasswordOf22chars";
const TID: [u8; 12] = *b"abcdefghijkl";

fn check(controlling: bool) -> BindingRequest<'static> {
    BindingRequest {
        transaction_id: TID,
        username: b"srvU:cliU",
        password: SERVER_PWD,
        priority: 0x6e7f_1eff,
        use_candidate: controlling,
        controlling: controlling.then_some(0x0102_0304_0506_0708),
        controlled: (!controlling).then_some(0xfffe_fdfc_fbfa_f9f8),
    }
}

#[test]
fn client_check_round_trips() {
    let mut buf = [0u8; 256];
    let n = check(true).write(&mut buf).unwrap();
    let wire = &buf[..n];
    assert!(is_stun(wire));

    let msg = Message::parse(wire).unwrap();
    assert_eq!(msg.msg_type(), MessageType::BINDING_REQUEST);
    assert_eq!(msg.transaction_id(), &TID);
    assert_eq!(msg.username(), Some(&b"srvU:cliU"[..]));
    assert_eq!(
        split_username(msg.username().unwrap()),
        Some((&b"srvU"[..], &b"cliU"[..]))
    );
    assert_eq!(msg.priority(), Some(0x6e7f_1eff));
    assert_eq!(msg.ice_controlling(), Some(0x0102_0304_0506_0708));
    assert_eq!(msg.ice_controlled(), None);
    assert!(msg.use_candidate());

    assert!(msg.verify_fingerprint());
    assert!(msg.verify_integrity(SERVER_PWD));
    assert!(!msg.verify_integrity(b"serverPasswordOf22charz"));
    assert!(!msg.verify_integrity(b"x"));
    // MESSAGE-INTEGRITY then FINGERPRINT close the message.
    let order: Vec<_> = msg.attributes().map(|(t, _)| t).collect();
    assert_eq!(
        &order[order.len() - 2..],
        [AttrType::MESSAGE_INTEGRITY, AttrType::FINGERPRINT]
    );
    // Username 9 bytes -> 12 padded: 20 + 16 + 8 + 12 + 4 + 24 + 8.
    assert_eq!(n, 92);
}

#[test]
fn controlled_check_without_nomination() {
    let mut buf = [0u8; 256];
    let n = check(false).write(&mut buf).unwrap();
    let msg = Message::parse(&buf[..n]).unwrap();
    assert_eq!(msg.ice_controlled(), Some(0xfffe_fdfc_fbfa_f9f8));
    assert_eq!(msg.ice_controlling(), None);
    assert!(!msg.use_candidate());
    assert!(msg.verify_integrity(SERVER_PWD));
}

#[test]
fn tampering_breaks_integrity_and_fingerprint() {
    let mut buf = [0u8; 256];
    let n = check(true).write(&mut buf).unwrap();
    // Change the priority value (inside the HMAC-covered region).
    let msg = Message::parse(&buf[..n]).unwrap();
    let prio_at = msg.attr(AttrType::PRIORITY).unwrap().as_ptr() as usize - buf.as_ptr() as usize;
    let mut tampered = buf;
    tampered[prio_at] ^= 0x10;
    let t = Message::parse(&tampered[..n]).unwrap();
    assert!(!t.verify_integrity(SERVER_PWD));
    assert!(!t.verify_fingerprint());
}

#[test]
fn success_response_ipv4_and_ipv6() {
    let mut req_buf = [0u8; 256];
    let n = check(true).write(&mut req_buf).unwrap();
    let request = Message::parse(&req_buf[..n]).unwrap();

    let v4 = SocketAddr::from((Ipv4Addr::new(203, 0, 113, 7), 54321));
    let v6 = SocketAddr::V6(SocketAddrV6::new(
        "2001:db8::dead:beef".parse::<Ipv6Addr>().unwrap(),
        443,
        0,
        0,
    ));
    for (mapped, expected_len) in [(v4, 20 + 12 + 24 + 8), (v6, 20 + 24 + 24 + 8)] {
        let mut out = [0u8; 128];
        let len = write_binding_success(&mut out, &request, mapped, SERVER_PWD).unwrap();
        assert_eq!(len, expected_len);
        let resp = Message::parse(&out[..len]).unwrap();
        assert_eq!(resp.class(), Class::SuccessResponse);
        assert_eq!(resp.method(), Method::BINDING);
        assert_eq!(resp.transaction_id(), request.transaction_id());
        assert_eq!(resp.xor_mapped_address(), Some(mapped));
        assert!(resp.verify_integrity(SERVER_PWD));
        assert!(!resp.verify_integrity(b"other"));
        assert!(resp.verify_fingerprint());
        assert_eq!(binding_response_address(&resp, &TID), Ok(mapped));
        assert_eq!(
            binding_response_address(&resp, &[0; 12]),
            Err(Error::TransactionMismatch)
        );
        // The exact-size buffer works, one byte less fails cleanly.
        assert_eq!(
            write_binding_success(&mut out[..len], &request, mapped, SERVER_PWD),
            Ok(len)
        );
        assert!(matches!(
            write_binding_success(&mut out[..len - 1], &request, mapped, SERVER_PWD),
            Err(Error::BufferTooSmall { .. })
        ));
    }
}

#[test]
fn responses_only_answer_binding_requests() {
    let mut req_buf = [0u8; 256];
    let n = check(true).write(&mut req_buf).unwrap();
    let mut out = [0u8; 128];
    let len = write_binding_success(
        &mut out,
        &Message::parse(&req_buf[..n]).unwrap(),
        "1.2.3.4:5".parse().unwrap(),
        b"k",
    )
    .unwrap();
    let response = Message::parse(&out[..len]).unwrap();
    let mut out2 = [0u8; 128];
    assert_eq!(
        write_binding_success(&mut out2, &response, "1.2.3.4:5".parse().unwrap(), b"k"),
        Err(Error::NotBindingRequest)
    );
    assert_eq!(
        write_binding_error(&mut out2, &response, 400, "Bad Request", &[]),
        Err(Error::NotBindingRequest)
    );
}

#[test]
fn error_responses() {
    let mut req_buf = [0u8; 256];
    let n = check(true).write(&mut req_buf).unwrap();
    let request = Message::parse(&req_buf[..n]).unwrap();
    let mut out = [0u8; 128];

    // 401: request not authenticated, so no MESSAGE-INTEGRITY.
    let len = write_binding_error(
        &mut out,
        &request,
        ErrorCode::UNAUTHENTICATED,
        "Unauthenticated",
        &[],
    )
    .unwrap();
    let resp = Message::parse(&out[..len]).unwrap();
    assert_eq!(resp.msg_type(), MessageType::BINDING_ERROR);
    let ec = resp.error_code().unwrap();
    assert_eq!(ec.code, 401);
    assert_eq!(ec.reason_str(), Some("Unauthenticated"));
    assert!(!resp.has_integrity());
    assert!(resp.verify_fingerprint());
    assert_eq!(
        binding_response_address(&resp, &TID),
        Err(Error::ErrorResponse { code: 401 })
    );

    // 487: sent after authenticating the request, so it carries MI.
    let len = write_binding_error(
        &mut out,
        &request,
        ErrorCode::ROLE_CONFLICT,
        "Role Conflict",
        SERVER_PWD,
    )
    .unwrap();
    let resp = Message::parse(&out[..len]).unwrap();
    assert_eq!(resp.error_code().map(|e| e.code), Some(487));
    assert!(resp.verify_integrity(SERVER_PWD));
    assert!(resp.verify_fingerprint());

    let len = write_binding_error(&mut out, &request, 400, "", &[]).unwrap();
    assert_eq!(
        Message::parse(&out[..len])
            .unwrap()
            .error_code()
            .map(|e| e.code),
        Some(400)
    );

    assert_eq!(
        write_binding_error(&mut out, &request, 200, "x", &[]),
        Err(Error::InvalidErrorCode(200))
    );
    assert_eq!(
        write_binding_error(&mut out, &request, 700, "x", &[]),
        Err(Error::InvalidErrorCode(700))
    );
    let long = "x".repeat(764);
    let mut big = [0u8; 1024];
    assert_eq!(
        write_binding_error(&mut big, &request, 400, &long, &[]),
        Err(Error::ReasonTooLong(764))
    );
}

#[test]
fn plain_nat_discovery_exchange() {
    let mut req = [0u8; 64];
    let n = write_plain_binding_request(&mut req, &TID).unwrap();
    assert_eq!(n, 20);
    let request = Message::parse(&req[..n]).unwrap();
    assert_eq!(request.msg_type(), MessageType::BINDING_REQUEST);
    assert_eq!(request.attributes().count(), 0);
    assert!(!request.verify_integrity(b"anything"));

    // A plain STUN server answers without credentials (empty key).
    let mapped: SocketAddr = "198.51.100.20:40000".parse().unwrap();
    let mut out = [0u8; 64];
    let len = write_binding_success(&mut out, &request, mapped, &[]).unwrap();
    let resp = Message::parse(&out[..len]).unwrap();
    assert!(!resp.has_integrity());
    assert!(resp.verify_fingerprint());
    assert_eq!(binding_response_address(&resp, &TID), Ok(mapped));
}

#[test]
fn legacy_mapped_address_fallback() {
    // A pre-RFC 5389-style answer carrying only MAPPED-ADDRESS.
    let mut out = [0u8; 64];
    let mut w = MessageWriter::new(&mut out, MessageType::BINDING_SUCCESS, &TID).unwrap();
    w.add_attr(AttrType::MAPPED_ADDRESS, &[0, 1, 0x1f, 0x90, 10, 0, 0, 1])
        .unwrap();
    let len = w.finish();
    let resp = Message::parse(&out[..len]).unwrap();
    assert_eq!(resp.xor_mapped_address(), None);
    assert_eq!(
        binding_response_address(&resp, &TID),
        Ok("10.0.0.1:8080".parse().unwrap())
    );
}

#[test]
fn writer_supports_unknown_attributes_for_extensions() {
    // A TURN-style attribute (LIFETIME, 0x000D) round-trips through the
    // generic writer and iterator without any TURN-specific code.
    let lifetime = AttrType(0x000D);
    let mut out = [0u8; 64];
    let mut w = MessageWriter::new(
        &mut out,
        MessageType::new(Class::Request, Method::new(0x003)),
        &TID,
    )
    .unwrap();
    w.add_u32(lifetime, 600).unwrap();
    w.add_attr(AttrType(0x8055), b"odd").unwrap();
    w.add_fingerprint().unwrap();
    let len = w.finish();
    let msg = Message::parse(&out[..len]).unwrap();
    assert_eq!(msg.method(), Method::new(0x003));
    assert_eq!(msg.attr(lifetime), Some(&600u32.to_be_bytes()[..]));
    assert_eq!(msg.attr(AttrType(0x8055)), Some(&b"odd"[..]));
    assert!(lifetime.is_comprehension_required());
    assert!(!AttrType(0x8055).is_comprehension_required());
    assert!(msg.verify_fingerprint());
}
