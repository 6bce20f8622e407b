//! The sans-IO core of the dial-in gateway.
//!
//! Media of a call: [`rtp`] packets → [`jitter`] buffer → [`codec`] ([`g711`], Opus) →
//! [`resample`] → [`mixer`]; keys: [`dtmf`].

pub mod codec;
pub mod dtmf;
pub mod g711;
pub mod ivr;
pub mod jitter;
pub mod mixer;
pub mod prompts;
pub mod reframe;
pub mod resample;
pub mod rtp;
