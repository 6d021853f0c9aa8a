//! Typed messages between paddock and the sandbox's init, over a
//! SOCK_SEQPACKET socket pair: one JSON message per packet, with file
//! descriptors (detached mounts) passed alongside by SCM_RIGHTS. A message
//! too large for one packet (a socket's buffer is about 200 KiB; a
//! manifest's environment may be up to 1 MiB) travels in a memfd passed as
//! the first descriptor.

use std::io::{IoSlice, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;

use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use serde::{Serialize, de::DeserializeOwned};

/// The largest message in a packet; anything larger goes in a memfd.
const INLINE: usize = 32 << 10;
/// The largest message at all: a manifest is at most 1 MiB, and its JSON
/// (escapes included) well under this.
const MAX_MESSAGE: u64 = 16 << 20;
/// The kernel's limit per SCM_RIGHTS message (SCM_MAX_FD).
pub const MAX_FDS: usize = 253;
/// The first byte of a packet: the JSON follows, or it is in the first descriptor.
const INLINE_TAG: u8 = b'J';
const MEMFD_TAG: u8 = b'M';

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("channel: {0}")]
    Io(#[from] Errno),
    #[error("channel: the other side closed the socket")]
    Closed,
    #[error("channel: a message was cut short")]
    Truncated,
    #[error("channel: bad message: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("channel: {0} file descriptors is more than {MAX_FDS}")]
    TooManyFds(usize),
    #[error("channel: a message of {0} bytes is more than the {MAX_MESSAGE} a message may hold")]
    TooLarge(u64),
    #[error("channel: the message's memfd: {0}")]
    Memfd(std::io::Error),
    #[error("channel: a report that is not in its packet (an init's reports always are)")]
    NotInline,
}

/// One end of the socket pair.
#[derive(Debug)]
pub struct Channel(OwnedFd);

impl Channel {
    pub fn new(fd: OwnedFd) -> Self {
        Self(fd)
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.0
    }

    pub fn send<T: Serialize>(&self, message: &T, fds: &[RawFd]) -> Result<(), ChannelError> {
        self.send_with(message, fds, MsgFlags::empty())
    }

    /// As `send`, or `Err(Io(EAGAIN))` at once when the other side's
    /// queue is full (it does not read): for what may be dropped, so that
    /// a peer that stops reading cannot stall the sender.
    pub fn try_send<T: Serialize>(&self, message: &T, fds: &[RawFd]) -> Result<(), ChannelError> {
        self.send_with(message, fds, MsgFlags::MSG_DONTWAIT)
    }

    /// Sends an init's report, its texts cut to fit the one packet the
    /// daemon reads it from (`InitReport::bounded`, `recv_report`).
    pub fn report(&self, report: super::config::InitReport) -> Result<(), ChannelError> {
        self.send(&report.bounded(), &[])
    }

    /// `report`, without waiting for room (`try_send`).
    pub fn try_report(&self, report: super::config::InitReport) -> Result<(), ChannelError> {
        self.try_send(&report.bounded(), &[])
    }

    fn send_with<T: Serialize>(&self, message: &T, fds: &[RawFd], flags: MsgFlags) -> Result<(), ChannelError> {
        let json = serde_json::to_vec(message)?;
        let memfd = if json.len() > INLINE { Some(to_memfd(&json)?) } else { None };
        let all: Vec<RawFd> = memfd.iter().map(AsRawFd::as_raw_fd).chain(fds.iter().copied()).collect();
        if all.len() > MAX_FDS {
            return Err(ChannelError::TooManyFds(all.len()));
        }
        let tag = [if memfd.is_some() { MEMFD_TAG } else { INLINE_TAG }];
        let body: &[u8] = if memfd.is_some() { &[] } else { &json };
        let iov = [IoSlice::new(&tag), IoSlice::new(body)];
        let cmsg = [ControlMessage::ScmRights(&all)];
        let cmsgs: &[ControlMessage<'_>] = if all.is_empty() { &[] } else { &cmsg };
        sendmsg::<()>(self.0.as_raw_fd(), &iov, cmsgs, flags, None)?;
        Ok(())
    }

    /// The next message; blocks until there is one.
    pub fn recv<T: DeserializeOwned>(&self) -> Result<(T, Vec<OwnedFd>), ChannelError> {
        let (message, fds) = self.receive(MsgFlags::empty(), true)?;
        Ok((message, fds.ok_or(ChannelError::Truncated)?))
    }

    /// As `recv`, for an answer that must not be lost when this process
    /// cannot take its descriptors (it is at its limit: the kernel
    /// installs none and marks them cut): the message, and None for them.
    /// A message that is itself in a memfd is cut short with them.
    pub fn recv_or_cut<T: DeserializeOwned>(&self) -> Result<(T, Option<Vec<OwnedFd>>), ChannelError> {
        self.receive(MsgFlags::empty(), true)
    }

    /// The next message from a sandbox's init, which paddock takes as
    /// untrusted (a workload allowed to trace its init can write to the
    /// channel): one packet, no descriptor kept (what came with it is
    /// closed), never a memfd, whose reading a file on a hung mount could
    /// stall. Its reports are small. Blocks until there is one.
    pub fn recv_report<T: DeserializeOwned>(&self) -> Result<T, ChannelError> {
        self.receive(MsgFlags::empty(), false).map(|(message, _)| message)
    }

    /// As `recv_report`, or `Err(Io(EAGAIN))` at once when there is none.
    pub fn try_recv_report<T: DeserializeOwned>(&self) -> Result<T, ChannelError> {
        self.receive(MsgFlags::MSG_DONTWAIT, false).map(|(message, _)| message)
    }

    /// A message, with its descriptors, or None for them when they were
    /// cut short.
    fn receive<T: DeserializeOwned>(
        &self,
        flags: MsgFlags,
        memfd: bool,
    ) -> Result<(T, Option<Vec<OwnedFd>>), ChannelError> {
        let mut buf = vec![0u8; INLINE + 1];
        let mut receive = || super::sys::recv_with_fds(self.0.as_fd(), &mut buf, MAX_FDS, flags.bits());
        let received = match receive() {
            // A peer that closed with a message of ours unread (an init
            // whose setup failed before it read the daemon's second byte)
            // resets the channel: the kernel says so once, before what the
            // peer sent, which is still there to read.
            Err(nix::errno::Errno::ECONNRESET) => receive()?,
            other => other?,
        };
        if received.truncated {
            return Err(ChannelError::Truncated);
        }
        // Descriptors cut short (this process near its limit): those the
        // kernel installed are closed with `received`.
        let mut fds = (!received.fds_cut).then_some(received.fds);
        let len = received.bytes;
        match buf.first() {
            _ if len == 0 => Err(ChannelError::Closed),
            Some(&INLINE_TAG) => Ok((serde_json::from_slice(&buf[1..len])?, fds)),
            Some(&MEMFD_TAG) if !memfd => Err(ChannelError::NotInline),
            Some(&MEMFD_TAG) if fds.as_ref().is_some_and(|fds| !fds.is_empty()) => {
                let mut fds = fds.take().unwrap_or_default();
                let memfd = std::fs::File::from(fds.remove(0));
                let size = memfd.metadata().map_err(ChannelError::Memfd)?.len();
                if size > MAX_MESSAGE {
                    return Err(ChannelError::TooLarge(size));
                }
                let mut json = vec![0u8; size as usize];
                memfd.read_exact_at(&mut json, 0).map_err(ChannelError::Memfd)?;
                Ok((serde_json::from_slice(&json)?, Some(fds)))
            }
            _ => Err(ChannelError::Truncated),
        }
    }
}

/// A message too large for a packet, in an anonymous file.
fn to_memfd(json: &[u8]) -> Result<OwnedFd, ChannelError> {
    if json.len() as u64 > MAX_MESSAGE {
        return Err(ChannelError::TooLarge(json.len() as u64));
    }
    let fd = nix::sys::memfd::memfd_create(c"paddock-message", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| ChannelError::Memfd(e.into()))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(json).map_err(ChannelError::Memfd)?;
    Ok(file.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

    fn pair() -> (Channel, Channel) {
        let (a, b) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).unwrap();
        (Channel::new(a), Channel::new(b))
    }

    #[test]
    fn small_and_large_messages_arrive_whole_with_their_descriptors() {
        let (a, b) = pair();
        let devnull = std::fs::File::open("/dev/null").unwrap();
        a.send(&"small", &[devnull.as_raw_fd()]).unwrap();
        let (text, fds) = b.recv::<String>().unwrap();
        assert_eq!((text.as_str(), fds.len()), ("small", 1));
        // Far beyond a packet: a manifest's whole environment.
        let big = "x".repeat(3 << 20);
        let many: Vec<RawFd> = vec![devnull.as_raw_fd(); MAX_FDS - 1];
        a.send(&big, &many).unwrap();
        let (text, fds) = b.recv::<String>().unwrap();
        assert_eq!((text.len(), fds.len()), (big.len(), MAX_FDS - 1));
        assert!(matches!(a.send(&"x", &vec![devnull.as_raw_fd(); MAX_FDS + 1]), Err(ChannelError::TooManyFds(_))));
        drop(a);
        assert!(matches!(b.recv::<String>(), Err(ChannelError::Closed)));
    }

    /// A peer that closed with a message of ours unread still has what it
    /// sent read (an init that failed before it read the second byte: its
    /// report said why, and was taken for a reset channel).
    #[test]
    fn what_a_peer_sent_before_it_closed_with_ours_unread_is_read() {
        let (a, b) = pair();
        a.send(&"the reason", &[]).unwrap();
        b.send(&"unread", &[]).unwrap();
        drop(a);
        assert_eq!(b.recv_report::<String>().unwrap(), "the reason");
        assert!(matches!(b.recv_report::<String>(), Err(ChannelError::Closed)));
    }

    #[test]
    fn an_inits_report_is_read_from_its_packet_only_and_its_descriptors_are_closed() {
        use std::io::Read;
        let (a, b) = pair();
        // A pipe's write end sent along: its read end sees the end of the
        // file once every copy of the write end is closed.
        let sent_closed = |message: String| {
            let (r, w) = nix::unistd::pipe().unwrap();
            a.send(&message, &[w.as_raw_fd()]).unwrap();
            drop(w);
            let got = b.try_recv_report::<String>();
            let mut rest = Vec::new();
            nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK)).unwrap();
            let eof = std::fs::File::from(r).read_to_end(&mut rest).is_ok();
            (got, eof)
        };
        let (got, eof) = sent_closed("small".to_owned());
        assert_eq!(got.unwrap(), "small");
        assert!(eof, "the descriptor that came along was closed");
        // What only a memfd could carry is refused, not read.
        let (got, eof) = sent_closed("x".repeat(INLINE + 1));
        assert!(matches!(got, Err(ChannelError::NotInline)), "{got:?}");
        assert!(eof, "and what came with it closed");
    }
}
