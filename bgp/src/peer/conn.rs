//! One TCP connection of a peer task and the small futures its select loop waits on.
use crate::connection;
use crate::fsm::{Direction, Session, Timer};
use crate::packet::CodecContext;
use bytes::BytesMut;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Bytes read per `read` call at most.
const READ_CHUNK: usize = 64 * 1024;

pub(super) type ConnectFuture =
    Pin<Box<dyn Future<Output = Result<TcpStream, connection::TransportError>> + Send>>;

/// One TCP connection and the FSM that runs on it.
pub(super) struct Conn {
    pub(super) session: Session,
    pub(super) direction: Option<Direction>,
    pub(super) stream: Option<TcpStream>,
    pub(super) timers: [Option<Instant>; 4],
    pub(super) rbuf: BytesMut,
    pub(super) wbuf: BytesMut,
    pub(super) ctx: CodecContext,
    /// Set on the Established output; the table is sent once collisions are settled.
    pub(super) just_established: bool,
}

impl Conn {
    pub(super) fn new(session: Session) -> Conn {
        Conn {
            session,
            direction: None,
            stream: None,
            timers: [None; 4],
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            ctx: CodecContext::PRE_OPEN,
            just_established: false,
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.timers.iter().flatten().min().copied()
    }
}

/// How long one write may block: the negotiated hold time, or 90 s without one.
pub(super) fn write_timeout(hold_time: Option<u16>) -> Duration {
    match hold_time {
        Some(h) if h > 0 => Duration::from_secs(u64::from(h)),
        _ => Duration::from_secs(90),
    }
}

pub(super) fn timer_index(t: Timer) -> usize {
    match t {
        Timer::ConnectRetry => 0,
        Timer::Hold => 1,
        Timer::Keepalive => 2,
        Timer::IdleHold => 3,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Which {
    Main,
    Extra,
}

/// Reads into `buf` from `stream`, or never completes without a stream.
pub(super) async fn read_from(
    stream: &mut Option<TcpStream>,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    match stream {
        Some(s) => {
            buf.reserve(READ_CHUNK);
            s.read_buf(buf).await
        }
        None => std::future::pending().await,
    }
}

pub(super) async fn connect_done(
    f: &mut Option<ConnectFuture>,
) -> Result<TcpStream, connection::TransportError> {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

pub(super) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Waits for a change of the BFD status, or never without a BFD session.
pub(super) async fn bfd_changed(
    bfd: &mut Option<(
        crate::bfd::Registration,
        tokio::sync::watch::Receiver<crate::bfd::BfdStatus>,
    )>,
) -> Result<(), tokio::sync::watch::error::RecvError> {
    match bfd {
        Some((_, rx)) => rx.changed().await,
        None => std::future::pending().await,
    }
}
