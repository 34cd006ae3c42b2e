//! The per-packet operations must not touch the heap. The crate is
//! `no_std` without `alloc`, so this holds by construction; this test
//! guards it against a future dependency or feature change anyway by
//! counting allocations made on the test's own thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use switchyard_stun::{
    binding_response_address, long_term_key, split_username, write_binding_error,
    write_binding_success, BindingRequest, Message,
};

struct CountingAlloc;

thread_local! {
    // Per-thread so the test harness's own threads do not interfere.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn ice_check_round_trip_does_not_allocate() {
    let mut req_buf = [0u8; 256];
    let mut resp_buf = [0u8; 256];
    let password: &[u8] = b"serverPasswordOf22chars";
    let mapped = "[2001:db8::7]:5000".parse().unwrap();

    let before = allocations();
    let request = BindingRequest {
        transaction_id: [9; 12],
        username: b"srvU:cliU",
        password,
        priority: 1,
        use_candidate: true,
        controlling: Some(3),
        controlled: None,
    };
    let n = request.write(&mut req_buf).unwrap();
    let msg = Message::parse(&req_buf[..n]).unwrap();
    assert!(msg.verify_fingerprint());
    assert!(msg.verify_integrity(password));
    assert!(split_username(msg.username().unwrap()).is_some());
    assert!(msg.use_candidate() && msg.priority().is_some() && msg.ice_controlling().is_some());
    let len = write_binding_success(&mut resp_buf, &msg, mapped, password).unwrap();
    let resp = Message::parse(&resp_buf[..len]).unwrap();
    assert!(resp.verify_integrity(password));
    assert_eq!(binding_response_address(&resp, &[9; 12]), Ok(mapped));
    let len = write_binding_error(&mut resp_buf, &msg, 487, "Role Conflict", password).unwrap();
    assert!(Message::parse(&resp_buf[..len])
        .unwrap()
        .error_code()
        .is_some());
    let _ = long_term_key(b"user", b"realm", b"pass");
    let after = allocations();

    assert_eq!(after - before, 0, "STUN hot path allocated");
}
