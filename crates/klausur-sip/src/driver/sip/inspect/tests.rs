use super::*;

fn policy() -> InspectPolicy {
    InspectPolicy {
        allow: vec!["127.0.0.1/32".parse().expect("net")],
        local_names: vec!["gw.example".into()],
        local_ips: vec!["127.0.0.1".parse().expect("ip")],
        any_local_ip: false,
    }
}

const TRUNK: &str = "127.0.0.1:5070";
const STRANGER: &str = "127.0.0.2:5070";

fn src(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

pub(crate) const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
    t=0 0\r\nm=audio 6000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";

pub(crate) fn invite(extra: &str, body: &str) -> String {
    format!(
        "INVITE sip:100@127.0.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport\r\n\
         From: <sip:+4930123456@127.0.0.1>;tag=abc\r\n\
         To: <sip:100@127.0.0.1>\r\n\
         Call-ID: call-1@127.0.0.1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:+4930123456@127.0.0.1:5070>\r\n\
         Max-Forwards: 70\r\n\
         {extra}Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn request(method: &str, extra: &str) -> String {
    format!(
        "{method} sip:100@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-2\r\n\
         From: <sip:a@127.0.0.1>;tag=abc\r\n\
         To: <sip:100@127.0.0.1>\r\n\
         Call-ID: call-2\r\n\
         CSeq: 5 {method}\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    )
}

fn status(i: &Inspection) -> Option<u16> {
    match i {
        Inspection::Reply { status, .. } => Some(*status),
        _ => None,
    }
}

fn is_forward(i: &Inspection) -> bool {
    matches!(i, Inspection::Forward(_))
}

#[test]
fn good_invite_is_forwarded() {
    let i = inspect(invite("", SDP).as_bytes(), src(TRUNK), &policy());
    assert!(is_forward(&i), "{i:?}");
    // Late offer (no body) too.
    let i = inspect(invite("", "").as_bytes(), src(TRUNK), &policy());
    assert!(is_forward(&i), "{i:?}");
}

#[test]
fn stranger_gets_403_for_invite_and_nothing_else() {
    let i = inspect(invite("", SDP).as_bytes(), src(STRANGER), &policy());
    assert_eq!(status(&i), Some(403));
    let Inspection::Reply { response, .. } = i else {
        unreachable!()
    };
    let text = String::from_utf8(response.to_vec()).expect("utf8");
    assert!(text.starts_with("SIP/2.0 403 Forbidden\r\n"), "{text}");
    assert!(text.contains("received=127.0.0.2"), "{text}");
    assert!(text.contains("rport=5070"), "{text}");
    assert!(text.contains("Call-ID: call-1@127.0.0.1"), "{text}");
    assert!(text.contains(";tag="), "{text}");
    // The same request gets the same To tag (retransmissions).
    let again = inspect(invite("", SDP).as_bytes(), src(STRANGER), &policy());
    let Inspection::Reply { response: r2, .. } = again else {
        unreachable!()
    };
    assert_eq!(response, r2);
    // Negative control: the allowed source with the same bytes is forwarded.
    assert!(is_forward(&inspect(
        invite("", SDP).as_bytes(),
        src(TRUNK),
        &policy()
    )));
    for m in ["OPTIONS", "BYE", "REFER"] {
        assert!(matches!(
            inspect(request(m, "").as_bytes(), src(STRANGER), &policy()),
            Inspection::Drop(DropReason::NotAllowed)
        ));
    }
}

#[test]
fn ipv4_mapped_source_counts_as_ipv4() {
    let mapped: SocketAddr = "[::ffff:127.0.0.1]:5070".parse().expect("addr");
    assert!(is_forward(&inspect(
        invite("", SDP).as_bytes(),
        mapped,
        &policy()
    )));
}

#[test]
fn addressing() {
    let other_host = invite("", SDP).replace("sip:100@127.0.0.1:5060", "sip:100@192.0.2.7");
    assert_eq!(
        status(&inspect(other_host.as_bytes(), src(TRUNK), &policy())),
        Some(404)
    );
    let by_name = invite("", SDP).replace("sip:100@127.0.0.1:5060", "sip:100@GW.example");
    assert!(is_forward(&inspect(
        by_name.as_bytes(),
        src(TRUNK),
        &policy()
    )));
    let mut any = policy();
    any.any_local_ip = true;
    assert!(is_forward(&inspect(
        other_host.as_bytes(),
        src(TRUNK),
        &any
    )));
    let routed = invite("Route: <sip:192.0.2.9;lr>\r\n", SDP);
    assert_eq!(
        status(&inspect(routed.as_bytes(), src(TRUNK), &policy())),
        Some(403)
    );
    let routed_to_us = invite("Route: <sip:127.0.0.1;lr>\r\n", SDP);
    assert!(is_forward(&inspect(
        routed_to_us.as_bytes(),
        src(TRUNK),
        &policy()
    )));
}

#[test]
fn methods() {
    let p = policy();
    assert!(is_forward(&inspect(
        request("OPTIONS", "").as_bytes(),
        src(TRUNK),
        &p
    )));
    assert_eq!(
        status(&inspect(
            request("REFER", "Refer-To: <sip:x@192.0.2.1>\r\n").as_bytes(),
            src(TRUNK),
            &p
        )),
        Some(405)
    );
    assert_eq!(
        status(&inspect(request("REGISTER", "").as_bytes(), src(TRUNK), &p)),
        Some(405)
    );
    assert_eq!(
        status(&inspect(request("FOO", "").as_bytes(), src(TRUNK), &p)),
        Some(501)
    );
    assert_eq!(
        status(&inspect(request("INFO", "").as_bytes(), src(TRUNK), &p)),
        Some(481)
    );
    // Inside a dialog, everything well-formed goes on (the dialog counts CSeq numbers).
    for m in ["INFO", "REFER", "FOO"] {
        let in_dialog =
            request(m, "").replace("To: <sip:100@127.0.0.1>", "To: <sip:100@127.0.0.1>;tag=x");
        assert!(
            is_forward(&inspect(in_dialog.as_bytes(), src(TRUNK), &p)),
            "{m}"
        );
    }
    assert_eq!(
        status(&inspect(
            request("OPTIONS", "Require: foo, timer\r\n").as_bytes(),
            src(TRUNK),
            &p
        )),
        Some(420)
    );
}

#[test]
fn malformed() {
    let p = policy();
    let t = src(TRUNK);
    assert!(matches!(
        inspect(b"hello world", t, &p),
        Inspection::Drop(DropReason::Unparseable)
    ));
    assert!(matches!(inspect(b"\r\n\r\n", t, &p), Inspection::KeepAlive));
    assert!(matches!(
        inspect(b"\r\n", t, &p),
        Inspection::Drop(DropReason::Blank)
    ));
    let no_via = invite("", SDP).replace(
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport\r\n",
        "",
    );
    assert!(matches!(
        inspect(no_via.as_bytes(), t, &p),
        Inspection::Drop(DropReason::MissingHeaders)
    ));
    let bad_via = invite("", SDP).replace("Via: SIP/2.0/UDP", "Via: garbage");
    assert!(matches!(
        inspect(bad_via.as_bytes(), t, &p),
        Inspection::Drop(DropReason::MissingHeaders)
    ));
    let big_cseq = invite("", SDP).replace("CSeq: 1 INVITE", "CSeq: 4294967295 INVITE");
    assert_eq!(status(&inspect(big_cseq.as_bytes(), t, &p)), Some(400));
    let mismatch = invite("", SDP).replace("CSeq: 1 INVITE", "CSeq: 1 BYE");
    assert_eq!(status(&inspect(mismatch.as_bytes(), t, &p)), Some(400));
    let no_tag = invite("", SDP).replace(";tag=abc", "");
    assert_eq!(status(&inspect(no_tag.as_bytes(), t, &p)), Some(400));
    let no_contact = invite("", SDP).replace("Contact: <sip:+4930123456@127.0.0.1:5070>\r\n", "");
    assert_eq!(status(&inspect(no_contact.as_bytes(), t, &p)), Some(400));
    let bad_header = invite("this is no header\r\n", SDP);
    assert_eq!(status(&inspect(bad_header.as_bytes(), t, &p)), Some(400));
    let bad_sdp = invite("", "v=0\r\nthis is not sdp\r\nm=audio x\r\n");
    assert_eq!(status(&inspect(bad_sdp.as_bytes(), t, &p)), Some(400));
    let video = invite("", &SDP.replace("m=audio", "m=video"));
    assert_eq!(status(&inspect(video.as_bytes(), t, &p)), Some(488));
    let not_sdp = invite("", SDP).replace("application/sdp", "text/plain");
    assert_eq!(status(&inspect(not_sdp.as_bytes(), t, &p)), Some(415));
    let short = invite("", SDP).replace(
        &format!("Content-Length: {}", SDP.len()),
        &format!("Content-Length: {}", SDP.len() + 50),
    );
    assert_eq!(status(&inspect(short.as_bytes(), t, &p)), Some(400));
    // A broken ACK is never answered.
    let ack = request("ACK", "").replace("CSeq: 5 ACK", "CSeq: 5 INVITE");
    assert!(matches!(
        inspect(ack.as_bytes(), t, &p),
        Inspection::Drop(DropReason::BadAck)
    ));
    let huge = vec![b'a'; MAX_MESSAGE_SIZE + 1];
    assert!(matches!(
        inspect(&huge, t, &p),
        Inspection::Drop(DropReason::TooLarge)
    ));
}

#[test]
fn responses_only_from_allowed_sources() {
    let resp = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n\
        From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>;tag=2\r\nCall-ID: c\r\n\
        CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n";
    assert!(is_forward(&inspect(resp.as_bytes(), src(TRUNK), &policy())));
    assert!(matches!(
        inspect(resp.as_bytes(), src(STRANGER), &policy()),
        Inspection::Drop(DropReason::NotAllowed)
    ));
}

#[test]
fn stream_framing() {
    let msg = invite("", SDP);
    assert_eq!(
        stream_frame(msg.as_bytes()),
        StreamFrame::Message(msg.len())
    );
    let mut two = msg.clone();
    two.push_str(&msg);
    assert_eq!(
        stream_frame(two.as_bytes()),
        StreamFrame::Message(msg.len())
    );
    assert_eq!(
        stream_frame(&msg.as_bytes()[..msg.len() - 3]),
        StreamFrame::Incomplete
    );
    assert_eq!(stream_frame(b"\r\n\r\nINVITE"), StreamFrame::KeepAlive(4));
    assert_eq!(stream_frame(b"\r\n"), StreamFrame::Incomplete);
    assert_eq!(stream_frame(b"\r\nOPTIONS"), StreamFrame::Blank(2));
    assert_eq!(
        stream_frame(b"OPTIONS sip:a SIP/2.0\r\nl: x\r\n\r\n"),
        StreamFrame::Invalid
    );
    assert_eq!(
        stream_frame(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 99999\r\n\r\n"),
        StreamFrame::Invalid
    );
    assert_eq!(stream_frame(&vec![b'a'; 70_000]), StreamFrame::Invalid);
}

/// A small deterministic generator (xorshift), so the mutation run is the same every time.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\r\n\r\n",
    b":",
    b";",
    b",",
    b"<",
    b">",
    b"\"",
    b"@",
    b"tag=",
    b"branch=",
    b"z9hG4bK",
    b"SIP/2.0",
    b"INVITE",
    b"ACK",
    b"BYE",
    b"REFER",
    b"CSeq: ",
    b"Via: ",
    b"Content-Length: ",
    b"4294967295",
    b"-1",
    b"999999999999",
    b"m=audio ",
    b"c=IN IP6 ",
    b"a=rtpmap:",
    b"\xc3\xa9",
    b"\xff",
    b"\0",
    b"%",
    b"[::1]",
    b"sips:",
    b" ",
    b"\t",
    b"Authorization: Digest algorithm=AKAv1-MD5, ",
    b"Route: <sip:x>",
    b"Require: ",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let pos = rng.below(out.len() + 1);
        match rng.below(6) {
            0 => {
                // Flip a byte.
                if let Some(b) = out.get_mut(pos) {
                    *b ^= 1 << rng.below(8);
                }
            }
            1 => {
                // Delete a run.
                let end = (pos + rng.below(16)).min(out.len());
                out.drain(pos.min(end)..end);
            }
            2 => {
                // Insert a token.
                let t = TOKENS[rng.below(TOKENS.len())];
                out.splice(pos..pos, t.iter().copied());
            }
            3 => {
                // Duplicate a run.
                let end = (pos + rng.below(64)).min(out.len());
                let run: Vec<u8> = out[pos.min(end)..end].to_vec();
                out.splice(pos..pos, run);
            }
            4 => out.truncate(pos),
            _ => {
                // Random byte.
                out.insert(pos, rng.below(256) as u8);
            }
        }
    }
    out
}

#[test]
fn mutated_messages_never_panic() {
    let seeds: Vec<String> = vec![
        invite("", SDP),
        invite("", ""),
        invite(
            "Authorization: Digest username=\"u\", realm=\"r\", nonce=\"n\", uri=\"sip:x\", response=\"0\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"c\"\r\nRequire: timer\r\nRoute: <sip:127.0.0.1;lr>\r\n",
            SDP,
        ),
        request("OPTIONS", ""),
        request("REFER", "Refer-To: <sip:x@192.0.2.1>\r\n"),
        request("BYE", "").replace("To: <sip:100@127.0.0.1>", "To: <sip:100@127.0.0.1>;tag=x"),
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\nFrom: <sip:a@h>;tag=1\r\n\
         To: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
            .to_string(),
    ];
    let p = policy();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut outcomes = [0usize; 4];
    for round in 0..4000 {
        let seed = seeds[round % seeds.len()].as_bytes();
        let input = mutate(&mut rng, seed);
        let source = if round % 7 == 0 {
            src(STRANGER)
        } else {
            src(TRUNK)
        };
        let i = inspect(&input, source, &p);
        let slot = match i {
            Inspection::KeepAlive => 0,
            Inspection::Drop(_) => 1,
            Inspection::Reply { .. } => 2,
            Inspection::Forward(_) => 3,
        };
        outcomes[slot] += 1;
        let _ = stream_frame(&input);
        if let Inspection::Forward(msg) = inspect(&input, src(TRUNK), &p) {
            // What goes to the stack has the headers the stack indexes.
            let vias: Vec<Via> = msg.headers.get_named().expect("vias");
            assert!(!vias.is_empty());
            if let MessageLine::Request(line) = &msg.line {
                let cseq: CSeq = msg.headers.get_named().expect("cseq");
                assert!(cseq.cseq < 1 << 31);
                assert_eq!(cseq.method, line.method);
                // The layer re-checks auth headers and SDP; neither may panic either.
                let _ = check_sdp_body(&msg.headers, &msg.body);
            }
        }
    }
    // The corpus exercises every outcome but the keep-alive.
    assert!(
        outcomes[1] > 0 && outcomes[2] > 0 && outcomes[3] > 0,
        "{outcomes:?}"
    );
}
