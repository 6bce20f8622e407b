//! sipp (Debian's sip-tester) as the telephone caller: scenarios written for each call (the
//! meeting number and PIN are drawn per test), RFC 4733 key presses from sip-tester's own
//! captures, G.711 audio from its A-law capture.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where sip-tester keeps its captures.
pub const CAPTURES: &str = "/usr/share/sip-tester";

/// How the call ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The caller hangs up after `stay`.
    CallerHangsUp,
    /// The gateway hangs up (BYE from the gateway expected within `stay`).
    GatewayHangsUp,
}

/// One call to script.
#[derive(Debug, Clone)]
pub struct Call {
    /// Keys to press after the call is answered, in order ('0'-'9', '*', '#'); `' '` waits 2 s.
    pub keys: String,
    /// Play sip-tester's A-law speech capture (7 s) after the keys, over and over while staying.
    pub audio: bool,
    /// How long the call stays after the keys.
    pub stay: Duration,
    pub end: End,
    /// The caller's number (From user part).
    pub caller: String,
}

fn capture(key: char) -> Option<String> {
    let name = match key {
        '0'..='9' => format!("dtmf_2833_{key}.pcap"),
        '*' => "dtmf_2833_star.pcap".into(),
        '#' => "dtmf_2833_pound.pcap".into(),
        _ => return None,
    };
    Some(format!("{CAPTURES}/{name}"))
}

/// The scenario XML of `call`.
pub fn scenario(call: &Call) -> String {
    let mut x = String::new();
    let _ = write!(
        x,
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="klausur dial-in caller">
  <send retrans="500">
    <![CDATA[
      INVITE sip:dialin@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Anrufer" <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:dialin@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:{caller}@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
      a=ptime:20
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true"/>
  <send>
    <![CDATA[
      ACK sip:dialin@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Anrufer" <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:dialin@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: sip:{caller}@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="1500"/>
"#,
        caller = call.caller
    );
    for key in call.keys.chars() {
        match capture(key) {
            Some(file) => {
                let _ = write!(
                    x,
                    "  <nop><action><exec play_pcap_audio=\"{file}\"/></action></nop>\n  <pause milliseconds=\"400\"/>\n"
                );
            }
            None => x.push_str("  <pause milliseconds=\"2000\"/>\n"),
        }
    }
    let stay = call.stay.as_millis() as u64;
    match call.end {
        End::CallerHangsUp => {
            if call.audio {
                // The capture lasts 7 s; play it as often as the stay needs.
                let mut left = stay;
                while left > 0 {
                    let chunk = left.min(7100);
                    let _ = write!(
                        x,
                        "  <nop><action><exec play_pcap_audio=\"{CAPTURES}/g711a.pcap\"/></action></nop>\n  <pause milliseconds=\"{chunk}\"/>\n"
                    );
                    left -= chunk;
                }
            } else {
                let _ = writeln!(x, "  <pause milliseconds=\"{stay}\"/>");
            }
            x.push_str(
                r#"  <send retrans="500">
    <![CDATA[
      BYE sip:dialin@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Anrufer" <sip:[service]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:dialin@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: sip:[service]@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
"#,
            );
        }
        End::GatewayHangsUp => {
            if call.audio {
                let _ = writeln!(
                    x,
                    "  <nop><action><exec play_pcap_audio=\"{CAPTURES}/g711a.pcap\"/></action></nop>"
                );
            }
            let _ = write!(
                x,
                r#"  <recv request="BYE" timeout="{stay}"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>
"#
            );
        }
    }
    x.push_str("</scenario>\n");
    x
}

/// A running sipp call.
pub struct Sipp {
    child: Child,
    pub dir: PathBuf,
    started: Instant,
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback UDP port for a SIP endpoint or sipp (free a moment ago, and outside the range
/// that others take ports from meanwhile: [`crate::process::free_port`]).
pub fn free_udp_port() -> u16 {
    crate::process::free_port()
}

/// Starts sipp for `call` against the gateway at `gateway`, from `local_ip`.
pub fn start(call: &Call, gateway: SocketAddr, local_ip: &str, dir: &Path) -> Sipp {
    assert!(
        Path::new(CAPTURES).is_dir(),
        "{CAPTURES} is missing: install Debian's sip-tester (scripts/setup.sh --with-browser does)"
    );
    std::fs::create_dir_all(dir).expect("sipp dir");
    let file = dir.join("scenario.xml");
    std::fs::write(&file, scenario(call)).expect("write scenario");
    let timeout = call.stay + Duration::from_secs(60);
    // sipp's media takes the ports from `-mp` to `-mp` + 3 (audio and video, RTP and RTCP).
    let media_port = crate::process::free_port_block(4);
    let child = Command::new("sipp")
        .current_dir(dir)
        .args([
            &gateway.to_string(),
            "-sf",
            &file.to_string_lossy(),
            "-m",
            "1",
            "-i",
            local_ip,
            "-p",
            &free_udp_port().to_string(),
            "-mi",
            local_ip,
            "-mp",
            &media_port.to_string(),
            "-s",
            &call.caller,
            "-timeout",
            &format!("{}s", timeout.as_secs()),
            "-timeout_error",
            "-nostdin",
            "-trace_err",
            "-trace_msg",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp (install Debian's sip-tester)");
    Sipp {
        child,
        dir: dir.to_path_buf(),
        started: Instant::now(),
    }
}

impl Sipp {
    /// Waits for sipp to end (bounded); its exit code and the message trace.
    pub fn wait(mut self, limit: Duration) -> (Option<i32>, String) {
        let deadline = self.started + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status.code(), self.trace());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return (None, self.trace());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn trace(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.ends_with(".log") {
                    let _ = writeln!(out, "== {name}");
                    out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        out
    }
}
