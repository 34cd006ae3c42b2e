//! switchyard-srtp
