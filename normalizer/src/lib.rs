//! The normalizer: raw Qoo10 rows (`QOO10_RAW`) become canonical orders (`ORDERS`), or dead
//! letters (`dlq.normalizer.<shop>`) that say why.
//!
//! [`normalize`] is the whole mapping, pure and table-tested; `main.rs` is the consumer loop.

pub mod normalize;
