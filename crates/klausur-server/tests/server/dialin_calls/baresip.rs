//! baresip (Debian's package) as a telephone caller that speaks and listens: it plays a tone
//! file as its microphone (the aufile module), records what it hears (the sndfile module), and
//! is driven over its ctrl_tcp interface (dial, DTMF as RFC 4733 events, hang up).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{free_port, free_port_block};

/// A running baresip.
pub struct Baresip {
    child: Child,
    dir: PathBuf,
    ctrl: u16,
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `secs` seconds of a `freq` Hz sine at 8 kHz (16-bit mono WAV) to `path`.
pub fn write_tone(path: &Path, freq: f64, secs: u32) {
    let n = 8000 * secs as usize;
    let mut data = Vec::with_capacity(n * 2);
    for i in 0..n {
        let s = (2.0 * std::f64::consts::PI * freq * i as f64 / 8000.0).sin() * 9000.0;
        data.extend_from_slice(&(s as i16).to_le_bytes());
    }
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&8000u32.to_le_bytes());
    wav.extend_from_slice(&16000u32.to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(data.len() as u32).to_le_bytes());
    wav.extend_from_slice(&data);
    std::fs::write(path, wav).expect("write tone");
}

/// The samples of a 16-bit mono WAV file (the sndfile module's recordings).
pub fn read_wav(path: &Path) -> Vec<i16> {
    let bytes = std::fs::read(path).expect("read recording");
    let mut i = 12;
    while i + 8 <= bytes.len() {
        let id = &bytes[i..i + 4];
        let len =
            u32::from_le_bytes([bytes[i + 4], bytes[i + 5], bytes[i + 6], bytes[i + 7]]) as usize;
        if id == b"data" {
            // A recording still open (or closed without fixing up its header) says 0 or too much:
            // then the data runs to the end of the file.
            let end = if len == 0 || i + 8 + len > bytes.len() {
                bytes.len()
            } else {
                i + 8 + len
            };
            return bytes[i + 8..end]
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
        }
        i += 8 + len;
    }
    Vec::new()
}

impl Baresip {
    /// Starts baresip with `tone` (a frequency) as its microphone, in `dir`.
    pub fn start(dir: &Path, tone: f64) -> Baresip {
        std::fs::create_dir_all(dir.join("rec")).expect("baresip dir");
        let tone_file = dir.join("tone.wav");
        write_tone(&tone_file, tone, 120);
        // SIP over UDP and TCP on `sip`, TLS on `sip + 1`.
        let sip = free_port_block(2);
        let ctrl = free_port();
        let rtp = (free_port_block(22) + 1) & !1;
        let config = format!(
            "poll_method\t\tepoll\n\
             sip_listen\t\t127.0.0.1:{sip}\n\
             net_interface\t\t127.0.0.1\n\
             audio_source\t\taufile,{tone}\n\
             audio_alert\t\taufile,/dev/null\n\
             audio_srate\t\t8000\n\
             audio_channels\t\t1\n\
             rtp_ports\t\t{rtp}-{rtp_end}\n\
             module_path\t\t/usr/lib/baresip/modules\n\
             module\t\t\tg711.so\n\
             module\t\t\taufile.so\n\
             module\t\t\tsndfile.so\n\
             module_app\t\taccount.so\n\
             module_app\t\tmenu.so\n\
             module\t\t\tctrl_tcp.so\n\
             ctrl_tcp_listen\t\t127.0.0.1:{ctrl}\n\
             snd_path\t\t{rec}\n",
            tone = tone_file.display(),
            rtp_end = rtp + 20,
            rec = dir.join("rec").display(),
        );
        std::fs::write(dir.join("config"), config).expect("config");
        std::fs::write(
            dir.join("accounts"),
            "<sip:+4930987654321@127.0.0.1>;regint=0\n",
        )
        .expect("accounts");
        std::fs::write(dir.join("contacts"), "").expect("contacts");
        let log = std::fs::File::create(dir.join("baresip.log")).expect("log");
        let child = Command::new("baresip")
            .arg("-f")
            .arg(dir)
            .arg("-v")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("baresip (install Debian's baresip)");
        let b = Baresip {
            child,
            dir: dir.to_path_buf(),
            ctrl,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", ctrl)).is_err() {
            assert!(
                Instant::now() < deadline,
                "baresip did not start: {}",
                b.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        b
    }

    /// baresip's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("baresip.log")).unwrap_or_default()
    }

    /// Sends one ctrl_tcp command; true if baresip said ok.
    pub fn command(&self, command: &str, params: &str) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.ctrl)) else {
            return false;
        };
        let msg =
            serde_json::json!({"command": command, "params": params, "token": "t"}).to_string();
        let _ = s.write_all(format!("{}:{msg},", msg.len()).as_bytes());
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let mut buf = vec![0u8; 8192];
        let mut got = String::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !got.contains("\"response\":true") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        got.contains("\"ok\":true")
    }

    /// Calls `gateway` and types `keys` (RFC 4733), a key every 400 ms after 3 s.
    pub fn call(&self, gateway: SocketAddr, keys: &str) {
        assert!(
            self.command("dial", &format!("sip:dialin@{gateway}")),
            "baresip could not dial: {}",
            self.log()
        );
        std::thread::sleep(Duration::from_secs(3));
        for k in keys.chars() {
            if k == ' ' {
                std::thread::sleep(Duration::from_secs(2));
                continue;
            }
            assert!(
                self.command("sndcode", &k.to_string()),
                "DTMF {k}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(400));
        }
    }

    /// Hangs up.
    pub fn hangup(&self) {
        self.command("hangup", "");
    }

    /// What baresip heard (the decoded audio of the call), 8 kHz, once the recording has stopped
    /// growing (after a hang-up baresip closes it; waits at most 10 s).
    pub fn heard(&self) -> Vec<i16> {
        let mut last = usize::MAX;
        for _ in 0..50 {
            let now = self.recording().len();
            if now == last && now > 0 {
                break;
            }
            last = now;
            std::thread::sleep(Duration::from_millis(200));
        }
        self.recording()
    }

    /// What baresip has recorded so far (the call may go on).
    pub fn recorded(&self) -> Vec<i16> {
        self.recording()
    }

    fn recording(&self) -> Vec<i16> {
        let rec = self.dir.join("rec");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&rec)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
            .map(|p| read_wav(p))
            .unwrap_or_default()
    }
}

/// Goertzel power of `freq` in `samples` at `rate`, normalised by the block's energy: near 1 for
/// a pure tone of that frequency, near 0 for anything else.
pub fn tone_share(samples: &[i16], rate: f64, freq: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let coeff = 2.0 * (2.0 * std::f64::consts::PI * freq / rate).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut energy = 0.0;
    for &x in samples {
        let x = f64::from(x);
        energy += x * x;
        let s = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    if energy <= 0.0 {
        return 0.0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    (2.0 * power / samples.len() as f64) / energy
}
