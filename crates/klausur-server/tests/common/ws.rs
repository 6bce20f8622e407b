//! A WebSocket client of the meeting signaling, for tests.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use klausur_proto::{ClientMsg, ServerMsg};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::TestServer;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Client {
    pub ws: Ws,
}

impl Client {
    pub async fn connect(srv: &TestServer, cookie: Option<&str>) -> Client {
        let mut req = format!("ws://{}/api/ws", srv.addr)
            .into_client_request()
            .expect("request");
        if let Some(c) = cookie {
            req.headers_mut()
                .insert("cookie", c.parse().expect("header"));
        }
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("connect");
        Client { ws }
    }

    /// Opens a meeting WebSocket as the dial-in gateway does: with the server's gateway token
    /// (the only connection whose dial-in tickets are accepted).
    pub async fn connect_as_gateway(srv: &TestServer) -> Client {
        let bearer = format!("Bearer {}", srv.gateway_token());
        match upgrade(srv, None, &[("authorization", bearer)]).await {
            Ok(ws) => Client { ws },
            Err(e) => panic!("the gateway's websocket refused: {e:?}"),
        }
    }

    /// Opens the meeting WebSocket of the server at `base` (`http://host:port`).
    pub async fn connect_to(base: &str) -> Client {
        let url = format!("{}/api/ws", base.replacen("http://", "ws://", 1));
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        Client { ws }
    }

    /// [`Client::connect_to`] as a dial-in gateway with `token`.
    pub async fn connect_to_as_gateway(base: &str, token: &str) -> Client {
        let mut req = format!("{}/api/ws", base.replacen("http://", "ws://", 1))
            .into_client_request()
            .expect("request");
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("connect");
        Client { ws }
    }

    /// Opens a meeting WebSocket from the loopback address `ip` (127.0.0.2, ...: clients
    /// behind different addresses). A refused upgrade gives its HTTP status and the `error`
    /// code of its JSON body.
    pub async fn try_connect_from(
        srv: &TestServer,
        ip: std::net::Ipv4Addr,
    ) -> Result<Client, (u16, String)> {
        upgrade(srv, Some(ip), &[]).await.map(|ws| Client { ws })
    }

    /// [`Client::try_connect_from`] that must succeed.
    pub async fn connect_from(srv: &TestServer, ip: std::net::Ipv4Addr) -> Client {
        match Client::try_connect_from(srv, ip).await {
            Ok(c) => c,
            Err(e) => panic!("websocket from {ip} refused: {e:?}"),
        }
    }

    /// Closes the connection and waits until the server has closed its side, by which time the
    /// meeting has taken the participant's leave (a `join` sent after this comes after it).
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }

    pub async fn send(&mut self, msg: &ClientMsg) {
        let text = serde_json::to_string(msg).expect("encode");
        self.raw(&text).await;
    }

    pub async fn raw(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// The next server message (skipping none), within 5 s.
    pub async fn next(&mut self) -> ServerMsg {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), self.ws.next())
                .await
                .expect("timely message")
                .expect("open")
                .expect("frame");
            if let Message::Text(t) = frame {
                return serde_json::from_str(t.as_str()).expect("valid server message");
            }
        }
    }

    /// Waits for a message matching `pred`, skipping others.
    pub async fn until(&mut self, pred: impl Fn(&ServerMsg) -> bool) -> ServerMsg {
        for _ in 0..50 {
            let m = self.next().await;
            if pred(&m) {
                return m;
            }
        }
        panic!("expected message did not arrive");
    }

    pub async fn join(
        &mut self,
        meeting: &str,
        token: Option<&str>,
        name: Option<&str>,
    ) -> ServerMsg {
        self.send(&ClientMsg::Join {
            meeting_id: meeting.into(),
            invite_token: token.map(str::to_string),
            display_name: name.map(str::to_string),
            rejoin_token: None,
            dial_in_ticket: None,
        })
        .await;
        self.next().await
    }

    /// Joins as the dial-in gateway for the caller of `ticket`.
    pub async fn join_by_phone(&mut self, meeting: &str, ticket: &str) -> ServerMsg {
        self.send(&ClientMsg::Join {
            meeting_id: meeting.into(),
            invite_token: None,
            display_name: None,
            rejoin_token: None,
            dial_in_ticket: Some(ticket.into()),
        })
        .await;
        self.next().await
    }

    /// Asserts that no message arrives within `quiet`.
    pub async fn nothing_within(&mut self, quiet: Duration) {
        let deadline = tokio::time::Instant::now() + quiet;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(t)))) => panic!("unexpected message: {t}"),
                Ok(Some(Ok(_))) => {}
                Ok(other) => panic!("connection ended: {other:?}"),
            }
        }
    }

    /// Joins as a lobby guest named `name` who holds the pass `rejoin_token`.
    pub async fn rejoin(&mut self, meeting: &str, rejoin_token: &str, name: &str) -> ServerMsg {
        self.send(&ClientMsg::Join {
            meeting_id: meeting.into(),
            invite_token: None,
            display_name: Some(name.into()),
            rejoin_token: Some(rejoin_token.into()),
            dial_in_ticket: None,
        })
        .await;
        self.next().await
    }
}

pub async fn session_cookie(srv: &TestServer, username: &str) -> String {
    let resp = srv
        .anonymous()
        .post(format!("{}/api/login", srv.base))
        .json(&serde_json::json!({"username": username, "password": super::PASSWORD}))
        .send()
        .await
        .expect("login");
    let c = resp
        .headers()
        .get("set-cookie")
        .expect("cookie")
        .to_str()
        .expect("ascii");
    c.split(';').next().expect("pair").to_string()
}

/// Asks for a meeting WebSocket, from the loopback address `from` if given, with extra request
/// `headers` (a cookie, a gateway token): the open socket, or the refusal's HTTP status and the
/// `error` code of its JSON body.
pub async fn upgrade(
    srv: &TestServer,
    from: Option<std::net::Ipv4Addr>,
    headers: &[(&str, String)],
) -> Result<Ws, (u16, String)> {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    let ip = from.unwrap_or(std::net::Ipv4Addr::LOCALHOST);
    socket
        .bind(std::net::SocketAddr::from((ip, 0)))
        .expect("bind");
    let stream = socket.connect(srv.addr).await.expect("connect");
    let mut req = format!("ws://{}/api/ws", srv.addr)
        .into_client_request()
        .expect("request");
    for (name, value) in headers {
        req.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                .expect("header name"),
            value.parse().expect("header value"),
        );
    }
    match tokio_tungstenite::client_async(req, tokio_tungstenite::MaybeTlsStream::Plain(stream))
        .await
    {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body: serde_json::Value =
                serde_json::from_slice(resp.body().as_deref().unwrap_or_default())
                    .unwrap_or_default();
            let code = body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            Err((resp.status().as_u16(), code))
        }
        Err(e) => panic!("websocket from {ip}: {e}"),
    }
}
