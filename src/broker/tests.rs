//! Router tests: packets and timestamps in, packets out; no sockets.
