//! switchyard-dtls
