//! Batched UDP receive with `recvmmsg(2)`.
//!
//! A [`RecvBatch`] is scratch space: turn-node shares one per worker thread among
//! all of its sockets (listeners and every relay socket), borrowed only between await
//! points, so the per-allocation cost is a socket and a task, not a 64 KiB buffer.
//! Each slot keeps [`RecvBatch::head`] bytes free in front of the datagram so a
//! caller can write a header in place (a TURN Data indication or ChannelData).

use std::io;
use std::mem::{MaybeUninit, size_of};
use std::net::SocketAddr;
use std::os::fd::RawFd;

use crate::{BATCH, sockaddr};
/// Largest datagram kept by [`RecvBatch::new`] (bigger ones are truncated by the kernel
/// and dropped).
const MAX_DATAGRAM: usize = 65_535;

/// Receive buffers and the kernel's per-message headers.
pub struct RecvBatch {
    head: usize,
    max: usize,
    slot: usize,
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    received: usize,
}

// SAFETY: the raw pointers in `iovs` and `hdrs` point into the batch's own vectors and
// are rebuilt before every system call; nothing else holds them between calls.
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch").field("received", &self.received).finish()
    }
}

impl RecvBatch {
    /// Buffers with `head` free bytes in front of each datagram and 4 behind
    /// (padding).
    pub fn new(head: usize) -> Self {
        Self::with_max_datagram(head, MAX_DATAGRAM)
    }

    /// As [`RecvBatch::new`], keeping datagrams of up to `max` bytes (larger ones are
    /// dropped): a 2 KiB slot suits media, where packets stay under the path MTU, and
    /// keeps the batch at 64 KiB instead of 2 MiB.
    pub fn with_max_datagram(head: usize, max: usize) -> Self {
        let slot = head + max + 4;
        let zeroed_storage = sockaddr::zeroed();
        // SAFETY: all-zero is a valid value for this plain C struct.
        let zeroed_hdr = unsafe { MaybeUninit::<libc::mmsghdr>::zeroed().assume_init() };
        RecvBatch {
            head,
            max,
            slot,
            bufs: vec![0u8; slot * BATCH],
            addrs: vec![zeroed_storage; BATCH],
            iovs: vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH],
            hdrs: vec![zeroed_hdr; BATCH],
            received: 0,
        }
    }

    /// Free bytes in front of every datagram.
    pub fn head(&self) -> usize {
        self.head
    }

    /// Non-blocking `recvmmsg` on `fd`; returns how many datagrams arrived
    /// (`WouldBlock` when none).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.received = 0;
        // The pointers are rebuilt on every call: `self` may have moved.
        let base = self.bufs.as_mut_ptr();
        for i in 0..BATCH {
            self.iovs[i] = libc::iovec {
                // SAFETY: i * slot + head is inside `bufs` (len = slot * BATCH).
                iov_base: unsafe { base.add(i * self.slot + self.head) }.cast(),
                iov_len: self.max,
            };
            let namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            sockaddr::point_header(&mut self.hdrs[i], &mut self.addrs[i], namelen, &mut self.iovs[i]);
        }
        // SAFETY: `hdrs` holds BATCH initialised headers whose name and iov
        // pointers point into `addrs`, `iovs` and `bufs`, all alive and not
        // otherwise borrowed for the duration of the call.
        let n = unsafe {
            libc::recvmmsg(fd, self.hdrs.as_mut_ptr(), BATCH as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.received = n as usize;
        Ok(self.received)
    }

    /// Datagram `i` of the last [`RecvBatch::recv`]: its slot (header room
    /// included), payload length and sender. `None` for truncated datagrams
    /// and unknown address families.
    pub fn get(&mut self, i: usize) -> Option<(&mut [u8], usize, SocketAddr)> {
        if i >= self.received {
            return None;
        }
        let hdr = &self.hdrs[i];
        if hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let len = hdr.msg_len as usize;
        let from = sockaddr::to_std(&self.addrs[i])?;
        let slot = &mut self.bufs[i * self.slot..(i + 1) * self.slot];
        Some((slot, len, from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn drains_several_datagrams_in_one_call() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..5u8 {
            tx.send_to(&[i; 3], rx.local_addr().unwrap()).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut batch = RecvBatch::new(48);
        assert_eq!(batch.recv(rx.as_raw_fd()).unwrap(), 5);
        for i in 0..5u8 {
            let (slot, len, from) = batch.get(usize::from(i)).unwrap();
            assert_eq!(&slot[48..48 + len], &[i; 3]);
            assert_eq!(from, tx.local_addr().unwrap());
        }
        assert!(batch.get(5).is_none());
        let err = batch.recv(rx.as_raw_fd()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_datagram_over_the_maximum_is_dropped_and_the_next_kept() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(&[7; 3000], rx.local_addr().unwrap()).unwrap();
        tx.send_to(&[8; 2048], rx.local_addr().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut batch = RecvBatch::with_max_datagram(0, 2048);
        assert_eq!(batch.recv(rx.as_raw_fd()).unwrap(), 2);
        assert!(batch.get(0).is_none(), "3000 bytes do not fit 2048");
        let (slot, len, _) = batch.get(1).unwrap();
        assert_eq!(&slot[..len], &[8; 2048][..]);
    }
}
