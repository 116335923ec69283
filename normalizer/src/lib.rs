//! The normalizer: raw Qoo10 rows (`QOO10_RAW`) become canonical orders (`ORDERS`), or dead
//! letters (`dlq.normalizer.<shop>`) that say why.
//!
//! [`normalize`] is the whole mapping, pure and table-tested; [`stage`] its IO (a batch in, its
//! outcomes published, then acknowledged); `main.rs` is the consumer loop.

pub mod normalize;
pub mod stage;
