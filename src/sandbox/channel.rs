//! Typed messages between paddock and the sandbox's init, over a
//! SOCK_SEQPACKET socket pair: one JSON message per packet, with file
//! descriptors (detached mounts) passed alongside by SCM_RIGHTS.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::cmsg_space;
use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Serialize, de::DeserializeOwned};

/// The largest message: a config with a long command and environment.
const MAX_MESSAGE: usize = 1 << 20;
const MAX_FDS: usize = 64;

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
        if fds.len() > MAX_FDS {
            return Err(ChannelError::TooManyFds(fds.len()));
        }
        let bytes = serde_json::to_vec(message)?;
        let iov = [IoSlice::new(&bytes)];
        let cmsg = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
        sendmsg::<()>(self.0.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None)?;
        Ok(())
    }

    pub fn recv<T: DeserializeOwned>(&self) -> Result<(T, Vec<OwnedFd>), ChannelError> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = cmsg_space!([RawFd; MAX_FDS]);
        let msg = recvmsg::<()>(self.0.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = c {
                // SAFETY: SCM_RIGHTS installed these descriptors in our table just now; we own them.
                fds.extend(received.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        if msg.flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) {
            return Err(ChannelError::Truncated);
        }
        let len = msg.bytes;
        if len == 0 {
            return Err(ChannelError::Closed);
        }
        Ok((serde_json::from_slice(&buf[..len])?, fds))
    }
}
