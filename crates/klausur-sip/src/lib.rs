//! Telephone dial-in for klausur.
//!
//! [`core`] is sans-IO: the voice menu, PIN entry, DTMF detection, G.711, the jitter buffer,
//! resampling and the mixer take time as an argument and return values; they never touch a
//! socket or the clock, and are tested in simulated time. [`driver`] does the I/O: the SIP
//! endpoint (ezk-sip), RTP sockets and the bridge into meetings.

pub mod core;
pub mod driver;
