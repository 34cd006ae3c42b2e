//! switchyard-udp
