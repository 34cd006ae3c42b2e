//! Index-stable storage: a `Vec<Option<T>>` whose freed indexes are reused, so that maps and hints
//! can hold plain indexes (transports, tracks, subscriptions, packet stores, TURN allocations).

/// Puts `value` in a free slot of `slots` (from `free`) or a new one at the end; returns its index.
pub fn insert<T>(slots: &mut Vec<Option<T>>, free: &mut Vec<usize>, value: T) -> usize {
    match free.pop() {
        Some(i) => {
            slots[i] = Some(value);
            i
        }
        None => {
            slots.push(Some(value));
            slots.len() - 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_indexes_are_reused_before_the_vector_grows() {
        let (mut v, mut free) = (Vec::new(), Vec::new());
        assert_eq!((insert(&mut v, &mut free, 'a'), insert(&mut v, &mut free, 'b')), (0, 1));
        v[0] = None;
        free.push(0);
        assert_eq!(insert(&mut v, &mut free, 'c'), 0);
        assert_eq!(insert(&mut v, &mut free, 'd'), 2);
        assert_eq!(v, vec![Some('c'), Some('b'), Some('d')]);
    }
}
