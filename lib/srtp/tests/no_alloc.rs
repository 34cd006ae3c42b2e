//! Proves the steady-state hot path allocates nothing: a counting global
//! allocator watches this thread while packets are protected and unprotected.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use switchyard_srtp::{Context, Profile};

struct Counting;

thread_local! {
    // const-initialised so reading it never allocates inside the allocator.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn counter_sees_allocations() {
    let before = allocations();
    let v: Vec<u8> = std::hint::black_box(Vec::with_capacity(64));
    assert!(
        allocations() > before,
        "the counting allocator is not in use"
    );
    drop(v);
}

#[test]
fn steady_state_protect_and_unprotect_do_not_allocate() {
    for profile in [Profile::Aes128CmHmacSha1_80, Profile::AeadAes128Gcm] {
        let key = [0x42u8; 16];
        let salt = vec![0x24u8; profile.salt_len()];
        let mut tx = Context::new(profile, &key, &salt).expect("tx");
        let mut rx = Context::new(profile, &key, &salt).expect("rx");
        let mut buf = [0u8; 1500];
        let ssrcs = [1u32, 2, 3];

        let mut round = |seq: u16, buf: &mut [u8; 1500]| {
            for ssrc in ssrcs {
                buf[..12].copy_from_slice(&[
                    0x80,
                    96,
                    (seq >> 8) as u8,
                    seq as u8,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                ]);
                buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
                let n = tx.protect_rtp(buf, 1200).expect("protect");
                assert_eq!(rx.unprotect_rtp(&mut buf[..n]).expect("unprotect"), 1200);

                buf[..8].copy_from_slice(&[0x81, 201, 0, 7, 0, 0, 0, 0]);
                buf[4..8].copy_from_slice(&ssrc.to_be_bytes());
                let n = tx.protect_rtcp(buf, 32).expect("protect_rtcp");
                assert_eq!(
                    rx.unprotect_rtcp(&mut buf[..n]).expect("unprotect_rtcp"),
                    32
                );
            }
        };
        // First sight of each SSRC creates its state (the one allowed allocation).
        round(65_000, &mut buf);
        let before = allocations();
        // 1000 packets per SSRC, crossing a sequence number wrap.
        for i in 1..=1000u16 {
            round(65_000u16.wrapping_add(i), &mut buf);
        }
        assert_eq!(allocations() - before, 0, "{profile:?}: hot path allocated");
    }
}
