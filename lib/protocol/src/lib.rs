//! switchyard-protocol
