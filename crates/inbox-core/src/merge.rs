//! Merging two sorted persistent vectors: the heart of a conversation merge.
//!
//! A conversation's messages are an [`imbl::Vector`] (an RRB tree) sorted by
//! [`Message::order_key`](crate::Message::order_key). RRB trees concatenate and split in
//! O(log n), so the merge works in *runs*: it finds, by galloping search, how many leading
//! elements of one side come before the head of the other, and moves that whole run with one
//! split and one append. When one conversation wholly precedes the other (the common visitor
//! -> contact case) that is a single append: O(log n) however long the conversations are.
//! When the two interleave finely the runs are short, and moving them one by one through the
//! tree would cost far more than a flat merge; so after a few short runs the rest is merged
//! linearly into a plain `Vec` and turned into a tree once, which stays within a small factor
//! of merging two `Vec`s.
//!
//! A naive `OrdMap::union` (rebalancing a B-tree insert by insert) is about 20 times slower
//! than the flat merge; see `docs/PERFORMANCE.md`.

use std::cmp::Ordering;

use imbl::Vector;

/// Runs shorter than this are copied element by element; longer ones are split off and
/// appended as subtrees.
const MIN_SPLIT_RUN: usize = 32;
/// After this many short runs the inputs are taken to interleave finely, and the rest is
/// merged linearly.
const SHORT_RUNS_BEFORE_LINEAR: usize = 16;

/// Merges two vectors, each sorted by `cmp`, into one sorted vector. Stable: on ties the
/// element of `a` comes first.
pub fn merge_sorted<T, F>(a: Vector<T>, b: Vector<T>, cmp: F) -> Vector<T>
where
    T: Clone,
    F: Fn(&T, &T) -> Ordering,
{
    let (mut a, mut b) = (a, b);
    let mut out = Vector::new();
    let mut short_runs = 0usize;
    loop {
        let (Some(a_head), Some(b_head)) = (a.front(), b.front()) else {
            out.append(a);
            out.append(b);
            return out;
        };
        // Take a run from whichever side has the smaller head; ties go to `a` (stability).
        let take_from_a = cmp(a_head, b_head) != Ordering::Greater;
        let (from, other) = if take_from_a {
            (&mut a, &b)
        } else {
            (&mut b, &a)
        };
        let Some(pivot) = other.front() else {
            continue;
        };
        // Length of the run of `from` that goes before `pivot`.
        let run = if take_from_a {
            gallop(from, |x| cmp(x, pivot) != Ordering::Greater)
        } else {
            gallop(from, |x| cmp(x, pivot) == Ordering::Less)
        };
        if run >= MIN_SPLIT_RUN || run == from.len() {
            let rest = from.split_off(run);
            let taken = std::mem::replace(from, rest);
            out.append(taken);
        } else {
            for _ in 0..run {
                if let Some(x) = from.pop_front() {
                    out.push_back(x);
                }
            }
            short_runs += 1;
            if short_runs >= SHORT_RUNS_BEFORE_LINEAR {
                out.append(merge_linear(a, b, &cmp));
                return out;
            }
        }
    }
}

/// The number of leading elements of `v` for which `before` holds (`before` must be true on
/// a prefix and false after it). Galloping: O(log k) probes for a run of length k.
fn gallop<T: Clone>(v: &Vector<T>, before: impl Fn(&T) -> bool) -> usize {
    let len = v.len();
    let mut focus = v.focus();
    let mut hi = 1usize;
    let mut lo = 0usize;
    // Exponential probe: find the first power-of-two bound where `before` fails.
    while hi <= len {
        match focus.get(hi - 1) {
            Some(x) if before(x) => {
                lo = hi;
                hi = hi.saturating_mul(2);
            }
            _ => break,
        }
    }
    let mut hi = hi.min(len + 1) - 1;
    // Binary search in (lo, hi]: elements [0, lo) satisfy `before`.
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match focus.get(mid) {
            Some(x) if before(x) => lo = mid + 1,
            _ => hi = mid,
        }
    }
    lo
}

/// Flat merge into a `Vec`, then one tree build.
fn merge_linear<T, F>(a: Vector<T>, b: Vector<T>, cmp: &F) -> Vector<T>
where
    T: Clone,
    F: Fn(&T, &T) -> Ordering,
{
    let mut out = Vec::with_capacity(a.len() + b.len());
    let mut ai = a.into_iter().peekable();
    let mut bi = b.into_iter().peekable();
    loop {
        let take_a = match (ai.peek(), bi.peek()) {
            (Some(x), Some(y)) => cmp(x, y) != Ordering::Greater,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_a { ai.next() } else { bi.next() };
        if let Some(x) = next {
            out.push(x);
        }
    }
    Vector::from(out)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(a: Vec<u32>, b: Vec<u32>) {
        let mut a = a;
        let mut b = b;
        a.sort_unstable();
        b.sort_unstable();
        let mut expected: Vec<(u32, bool)> = a
            .iter()
            .map(|x| (*x, false))
            .chain(b.iter().map(|x| (*x, true)))
            .collect();
        expected.sort_by_key(|(x, from_b)| (*x, *from_b)); // stable: a's first on ties
        let va: Vector<(u32, bool)> = a.iter().map(|x| (*x, false)).collect();
        let vb: Vector<(u32, bool)> = b.iter().map(|x| (*x, true)).collect();
        let merged = merge_sorted(va, vb, |x, y| x.0.cmp(&y.0));
        assert_eq!(merged.into_iter().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn disjoint_interleaved_and_empty() {
        check(vec![], vec![]);
        check((0..1000).collect(), vec![]);
        check((0..1000).collect(), (1000..3000).collect());
        check((1000..3000).collect(), (0..1000).collect());
        check(
            (0..5000).map(|x| x * 2).collect(),
            (0..5000).map(|x| x * 2 + 1).collect(),
        );
        check((0..100).collect(), (0..100).collect());
    }

    proptest! {
        #[test]
        fn merge_equals_sorting_the_union(
            a in proptest::collection::vec(0u32..500, 0..600),
            b in proptest::collection::vec(0u32..500, 0..600),
        ) {
            check(a, b);
        }

        #[test]
        fn merge_of_runs(runs in proptest::collection::vec((any::<bool>(), 1usize..200), 0..20)) {
            let (mut a, mut b, mut x) = (Vec::new(), Vec::new(), 0u32);
            for (side, len) in runs {
                for _ in 0..len {
                    if side { a.push(x) } else { b.push(x) }
                    x += 1;
                }
            }
            check(a, b);
        }
    }
}
