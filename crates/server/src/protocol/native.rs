//! The native protocol: one JSON object per frame (a line on TCP, a text message on
//! WebSocket), as `salon-proto` defines and `docs/PROTOCOL.md` documents. The only place
//! in the server that turns typed frames into JSON.

use bytes::Bytes;
use salon_proto::{
    encode_error, encode_ok, CloseCode, Command, DecodeError, ErrorBody, ErrorCode, Event,
};
use salon_proto::{Hello, Reply, Request, ServerFrame};

use super::{DecodeFailure, Protocol, WireFormat};

/// The native JSON protocol (format slot 0).
#[derive(Debug, Clone, Copy, Default)]
pub struct Native;

/// The one instance every native session shares.
pub static NATIVE: Native = Native;

/// The keep-alive probe: the `ping` event.
static PROBE: &[u8] = b"{\"type\":\"event\",\"event\":\"ping\"}\n";

/// `ServerFrame`'s `hello` and `event` by reference: the same JSON without cloning them.
#[derive(serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Frame<'a> {
    Hello(&'a Hello),
    Event(&'a Event),
}

impl WireFormat for Native {
    fn slot(&self) -> usize {
        0
    }

    fn encode_hello(&self, hello: &Hello) -> Bytes {
        Bytes::from(salon_proto::encode_line(&Frame::Hello(hello)))
    }

    fn encode_reply(&self, re: u64, reply: &Reply) -> Bytes {
        Bytes::from(encode_ok(re, reply))
    }

    fn encode_error(&self, re: Option<u64>, error: &ErrorBody) -> Bytes {
        Bytes::from(encode_error(re, error.clone()))
    }

    fn encode_event(&self, event: &Event) -> Bytes {
        Bytes::from(salon_proto::encode_line(&Frame::Event(event)))
    }

    fn encode_closing(&self, code: CloseCode, message: &str, until: Option<i64>) -> Bytes {
        Bytes::from(
            ServerFrame::Closing {
                code,
                message: message.to_owned(),
                until,
            }
            .to_line(),
        )
    }

    fn probe(&self) -> Bytes {
        Bytes::from_static(PROBE)
    }

    fn is_probe(&self, frame: &[u8]) -> bool {
        frame == PROBE
    }
}

impl Protocol for Native {
    fn decode(&self, frame: &[u8]) -> Result<Request, DecodeFailure> {
        Request::decode(frame).map_err(|e| {
            let (re, error) = decode_error_body(e);
            DecodeFailure { re, error }
        })
    }
}

fn decode_error_body(e: DecodeError) -> (Option<u64>, ErrorBody) {
    match e {
        DecodeError::InvalidUtf8 => (
            None,
            ErrorBody::new(ErrorCode::InvalidUtf8, "the frame is not valid UTF-8"),
        ),
        DecodeError::BadJson(detail) => (
            None,
            ErrorBody::new(
                ErrorCode::BadJson,
                format!(
                    "the frame is not a request object {{\"id\":<number>,\"cmd\":<string>,\
                     \"args\":{{…}}}}: {detail}"
                ),
            ),
        ),
        DecodeError::UnknownCommand { id, cmd } => (
            Some(id),
            ErrorBody::new(
                ErrorCode::UnknownCommand,
                format!(
                    "unknown command {cmd:?}; known commands: {}",
                    Command::NAMES.join(", ")
                ),
            ),
        ),
        DecodeError::InvalidCharacters { id, cmd } => (
            Some(id),
            ErrorBody::new(
                ErrorCode::InvalidCharacters,
                format!(
                    "the arguments of `{cmd}` hold a control character; only tab and newline \
                     are allowed in text"
                ),
            ),
        ),
        DecodeError::InvalidArgs { id, cmd, detail } => (
            Some(id),
            ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("invalid arguments for `{cmd}`: {detail}"),
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_encodes_as_the_server_frame_does() {
        let event = Event::Shutdown {
            seconds: 3,
            message: "bye".into(),
        };
        assert_eq!(
            NATIVE.encode_event(&event),
            Bytes::from(ServerFrame::Event(event).to_line())
        );
        assert!(NATIVE.is_probe(&NATIVE.encode_event(&Event::Ping)));
        let hello = Hello {
            protocol: 1,
            server: "salon/test".into(),
            max_frame_bytes: 10,
            max_message_chars: 5,
            registration: salon_proto::RegistrationMode::Invite,
        };
        assert_eq!(
            NATIVE.encode_hello(&hello),
            Bytes::from(ServerFrame::Hello(hello).to_line())
        );
        let message = Event::Message(salon_proto::RoomMessage {
            id: 1,
            room: "Général".into(),
            author: "a".into(),
            alias: "A".into(),
            text: "t \"q\"".into(),
            ts: 2,
            ..Default::default()
        });
        assert_eq!(
            NATIVE.encode_event(&message),
            Bytes::from(ServerFrame::Event(message).to_line())
        );
    }
}
