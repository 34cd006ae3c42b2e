//! switchyard-stun
