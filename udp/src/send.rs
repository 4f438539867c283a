//! Batched UDP send with `sendmmsg(2)`.
//!
//! A [`SendBatch`] queues datagrams (owned buffers, so nothing is copied) with their
//! destinations and sends them in as few system calls as the kernel allows. UDP
//! semantics are kept: a datagram the socket refuses (no buffer space, no route, a
//! destination the kernel rejects) is dropped and counted, and the datagrams after it
//! are still sent.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use crate::{BATCH, sockaddr};

/// What one [`SendBatch::flush`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Datagrams the kernel took.
    pub sent: usize,
    /// Datagrams dropped, each with the error the kernel gave it.
    pub dropped: usize,
    /// System calls made.
    pub calls: usize,
}

/// Datagrams waiting to be sent, and the kernel's per-message headers.
pub struct SendBatch<B> {
    queue: Vec<(SocketAddr, B)>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in `iovs` and `hdrs` are rebuilt before every system call
// from the batch's own vectors and queued buffers; nothing holds them between calls.
unsafe impl<B: Send> Send for SendBatch<B> {}

impl<B> std::fmt::Debug for SendBatch<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch").field("queued", &self.queue.len()).finish()
    }
}

impl<B: AsRef<[u8]>> Default for SendBatch<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: AsRef<[u8]>> SendBatch<B> {
    pub fn new() -> Self {
        // SAFETY: all-zero is a valid value for this plain C struct.
        let zeroed_hdr = unsafe { MaybeUninit::<libc::mmsghdr>::zeroed().assume_init() };
        SendBatch {
            queue: Vec::with_capacity(BATCH),
            addrs: vec![sockaddr::zeroed(); BATCH],
            iovs: vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH],
            hdrs: vec![zeroed_hdr; BATCH],
        }
    }

    /// Queues `data` for `destination`. The caller flushes when [`SendBatch::is_full`]
    /// says so, and whenever it is about to wait.
    pub fn push(&mut self, destination: SocketAddr, data: B) {
        self.queue.push((destination, data));
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// One system call's worth is queued.
    pub fn is_full(&self) -> bool {
        self.queue.len() >= BATCH
    }

    /// Sends everything queued on the non-blocking socket `fd`, [`BATCH`] datagrams per
    /// call, and empties the queue.
    pub fn flush(&mut self, fd: RawFd) -> Flushed {
        let mut done = Flushed::default();
        let mut start = 0;
        while start < self.queue.len() {
            let n = (self.queue.len() - start).min(BATCH);
            for i in 0..n {
                let (dest, data) = &self.queue[start + i];
                let data = data.as_ref();
                let len = sockaddr::from_std(dest, &mut self.addrs[i]);
                self.iovs[i] = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
                sockaddr::point_header(&mut self.hdrs[i], &mut self.addrs[i], len, &mut self.iovs[i]);
            }
            // SAFETY: the first `n` headers are initialised; their name and iov pointers
            // point into `addrs`, `iovs` and the queued buffers, all alive and not
            // otherwise borrowed for the duration of the call. The kernel only reads the
            // buffers (sendmmsg does not write through msg_iov).
            let r = unsafe { libc::sendmmsg(fd, self.hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
            done.calls += 1;
            if r > 0 {
                done.sent += r as usize;
                start += r as usize;
            } else {
                // The datagram at `start` was refused (sendmmsg reports the first
                // message's error; a later one's surfaces on the next call): drop it
                // and go on with the rest.
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                done.dropped += 1;
                start += 1;
            }
        }
        self.queue.clear();
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn drain(rx: &std::net::UdpSocket) -> Vec<(Vec<u8>, SocketAddr)> {
        rx.set_nonblocking(true).unwrap();
        let mut got = vec![];
        let mut buf = [0u8; 2048];
        std::thread::sleep(std::time::Duration::from_millis(50));
        while let Ok((n, from)) = rx.recv_from(&mut buf) {
            got.push((buf[..n].to_vec(), from));
        }
        got
    }

    #[test]
    fn sends_many_destinations_in_few_calls_and_in_order() {
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.set_nonblocking(true).unwrap();
        let rx: Vec<_> = (0..3).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        let mut batch = SendBatch::new();
        for i in 0..(BATCH + 8) {
            batch.push(rx[i % 3].local_addr().unwrap(), vec![i as u8; 1 + i]);
        }
        let done = batch.flush(tx.as_raw_fd());
        assert_eq!(done, Flushed { sent: BATCH + 8, dropped: 0, calls: 2 });
        assert!(batch.is_empty());
        for (r, sock) in rx.iter().enumerate() {
            let got = drain(sock);
            let want: Vec<usize> = (0..BATCH + 8).filter(|i| i % 3 == r).collect();
            assert_eq!(got.len(), want.len());
            for ((data, from), i) in got.iter().zip(want) {
                assert_eq!(data, &vec![i as u8; 1 + i]);
                assert_eq!(*from, tx.local_addr().unwrap());
            }
        }
    }

    #[test]
    fn a_refused_datagram_is_dropped_and_the_rest_still_go() {
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.set_nonblocking(true).unwrap();
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut batch = SendBatch::new();
        batch.push(rx.local_addr().unwrap(), b"one".to_vec());
        // An IPv6 destination on an IPv4 socket: the kernel refuses this one message.
        batch.push("[::1]:9".parse().unwrap(), b"refused".to_vec());
        // Too large for a UDP datagram: refused as well.
        batch.push(rx.local_addr().unwrap(), vec![0; 70_000]);
        batch.push(rx.local_addr().unwrap(), b"two".to_vec());
        let done = batch.flush(tx.as_raw_fd());
        assert_eq!((done.sent, done.dropped), (2, 2), "{done:?}");
        let got: Vec<Vec<u8>> = drain(&rx).into_iter().map(|(d, _)| d).collect();
        assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec()]);
    }
}
