//! A relay between QEMU and the vhost crate's request handler that fixes one ordering
//! mismatch between them.
//!
//! QEMU's virtio-net (7.2 and later) sends `VHOST_USER_SET_VRING_ENABLE` as soon as the back
//! end *offers* `VHOST_USER_F_PROTOCOL_FEATURES` — at device realize and again before it
//! starts the device —, while `vhost` 0.18 accepts that request only once `SET_FEATURES` has
//! *acked* the bit, and otherwise drops the connection. Without the bit QEMU refuses to start
//! vhost-user-net altogether (`vhost_user_set_vring_enable` returns `EINVAL`). So the relay
//! holds back `SET_VRING_ENABLE` until `SET_FEATURES` with the bit has gone through, then
//! passes the last state held for each ring; a held request that asked for a reply is answered
//! with success at once. Everything else (with its file descriptors: memory regions, kick and
//! call eventfds) passes unchanged, in order.
//!
//! Messages are framed by their 12-byte header (request, flags, payload size); a payload above
//! [`MAX_PAYLOAD`] or more than [`MAX_FDS`] descriptors end the connection.

use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use vmm_sys_util::sock_ctrl_msg::ScmSocket as _;

/// vhost-user header length.
const HDR_LEN: usize = 12;
/// Largest payload relayed (the largest message QEMU sends this back end is a memory table of
/// 8 regions, 264 bytes; configuration space reads are at most 256 bytes).
const MAX_PAYLOAD: usize = 64 * 1024;
/// Most descriptors one message may carry (8 memory regions is the protocol's limit without
/// `CONFIGURE_MEM_SLOTS`, which this back end does not offer).
const MAX_FDS: usize = 16;

const REQ_SET_FEATURES: u32 = 2;
const REQ_RESET_OWNER: u32 = 4;
const REQ_SET_MEM_TABLE: u32 = 5;
const REQ_SET_VRING_KICK: u32 = 12;
const REQ_SET_VRING_CALL: u32 = 13;
const REQ_SET_VRING_ERR: u32 = 14;
const REQ_SET_VRING_ENABLE: u32 = 18;
/// How long a write to either side may block.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
const FLAG_REPLY: u32 = 1 << 2;
const FLAG_NEED_REPLY: u32 = 1 << 3;
const PROTOCOL_FEATURES: u64 = 1 << 30;
/// Rings a `SET_VRING_ENABLE` may name and be held for.
const MAX_RINGS: usize = 8;

/// One message: header fields, payload, descriptors.
struct Message {
    request: u32,
    flags: u32,
    payload: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl Message {
    fn header(&self) -> [u8; HDR_LEN] {
        let mut h = [0u8; HDR_LEN];
        h[0..4].copy_from_slice(&self.request.to_le_bytes());
        h[4..8].copy_from_slice(&self.flags.to_le_bytes());
        let size = u32::try_from(self.payload.len()).unwrap_or(u32::MAX);
        h[8..12].copy_from_slice(&size.to_le_bytes());
        h
    }

    fn u64_payload(&self) -> Option<u64> {
        Some(u64::from_le_bytes(*self.payload.first_chunk()?))
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// Reads one message; `Ok(None)` at a clean end of stream.
#[allow(unsafe_code)]
fn read_message(from: &UnixStream) -> io::Result<Option<Message>> {
    let mut hdr = [0u8; HDR_LEN];
    let mut raw_fds = [-1 as RawFd; MAX_FDS];
    let mut iov = [libc::iovec {
        iov_base: hdr.as_mut_ptr().cast(),
        iov_len: hdr.len(),
    }];
    // SAFETY: the one iovec points at `hdr`, which is borrowed mutably for the call and whose
    // length it states; recvmsg writes at most that many bytes there. Received descriptors are
    // wrapped in OwnedFd right below, so each is closed exactly once.
    let (n, nfds) = unsafe { from.recv_with_fds(&mut iov, &mut raw_fds) }
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
    let fds: Vec<OwnedFd> = raw_fds
        .iter()
        .take(nfds)
        // SAFETY: recvmsg gave us these descriptors; nothing else owns them.
        .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    if n == 0 {
        return Ok(None);
    }
    // the rest of a header split across reads carries no descriptors
    let mut reader = from;
    reader.read_exact(hdr.get_mut(n..).unwrap_or_default())?;
    let request = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let flags = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
    let size = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]) as usize;
    if size > MAX_PAYLOAD {
        return Err(invalid("a vhost-user payload over 64 KiB"));
    }
    let mut payload = vec![0u8; size];
    reader.read_exact(&mut payload)?;
    Ok(Some(Message {
        request,
        flags,
        payload,
        fds,
    }))
}

fn write_message(to: &UnixStream, msg: &Message) -> io::Result<()> {
    let header = msg.header();
    let raw: Vec<RawFd> = msg.fds.iter().map(|f| f.as_raw_fd()).collect();
    // the descriptors travel with the first bytes; the rest follows as plain data
    let n = to
        .send_with_fds(&[&header[..]], &raw)
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
    let mut writer = to;
    writer.write_all(header.get(n..).unwrap_or_default())?;
    writer.write_all(&msg.payload)
}

/// Relays between `qemu` and `backend` until either side closes; `on_hold` is called for every
/// `SET_VRING_ENABLE` held back. Returns how many were.
pub fn relay(qemu: UnixStream, backend: UnixStream, on_hold: impl Fn()) -> io::Result<u64> {
    // A peer that stops reading must not hold the other side forever.
    qemu.set_write_timeout(Some(WRITE_TIMEOUT))?;
    backend.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let to_qemu = Arc::new(Mutex::new(qemu.try_clone()?));
    // back end → QEMU: replies, in order
    let replies = {
        let from = backend.try_clone()?;
        let to = to_qemu.clone();
        let qemu_side = qemu.try_clone()?;
        let backend_side = backend.try_clone()?;
        std::thread::Builder::new()
            .name("vhost-relay".into())
            .spawn(move || {
                while let Ok(Some(msg)) = read_message(&from) {
                    let sent = to
                        .lock()
                        .map_err(|_| invalid("lock"))
                        .and_then(|q| write_message(&q, &msg));
                    if sent.is_err() {
                        break;
                    }
                }
                // both sides: the request direction may be blocked writing to a back end
                // that is itself blocked sending a reply nobody reads any more
                let _ = qemu_side.shutdown(std::net::Shutdown::Both);
                let _ = backend_side.shutdown(std::net::Shutdown::Both);
            })?
    };
    let result = relay_requests(&qemu, &backend, &to_qemu, &on_hold);
    let _ = backend.shutdown(std::net::Shutdown::Both);
    let _ = qemu.shutdown(std::net::Shutdown::Both);
    let _ = replies.join();
    result
}

fn relay_requests(
    qemu: &UnixStream,
    backend: &UnixStream,
    to_qemu: &Mutex<UnixStream>,
    on_hold: &dyn Fn(),
) -> io::Result<u64> {
    let mut acked = false;
    let mut held: [Option<Message>; MAX_RINGS] = Default::default();
    let mut held_count = 0;
    while let Some(msg) = read_message(qemu)? {
        if msg.fds.len() >= MAX_FDS {
            return Err(invalid("a vhost-user message with too many descriptors"));
        }
        check_descriptors(&msg)?;
        match msg.request {
            REQ_SET_VRING_ENABLE if !acked => {
                held_count += 1;
                on_hold();
                if msg.flags & FLAG_NEED_REPLY != 0 {
                    let reply = Message {
                        request: msg.request,
                        flags: (msg.flags & 0x3) | FLAG_REPLY,
                        payload: 0u64.to_le_bytes().to_vec(),
                        fds: Vec::new(),
                    };
                    let q = to_qemu.lock().map_err(|_| invalid("lock"))?;
                    write_message(&q, &reply)?;
                }
                // vhost_vring_state: index (u32), num (u32)
                let index = msg
                    .payload
                    .first_chunk::<4>()
                    .map(|b| u32::from_le_bytes(*b) as usize);
                if let Some(slot) = index.and_then(|i| held.get_mut(i)) {
                    *slot = Some(Message {
                        flags: msg.flags & !FLAG_NEED_REPLY,
                        ..msg
                    });
                }
            }
            REQ_SET_FEATURES => {
                let now_acked = msg
                    .u64_payload()
                    .is_some_and(|f| f & PROTOCOL_FEATURES != 0);
                write_message(backend, &msg)?;
                if now_acked && !acked {
                    acked = true;
                    for m in held.iter_mut().filter_map(Option::take) {
                        write_message(backend, &m)?;
                    }
                }
            }
            REQ_RESET_OWNER => {
                acked = false;
                held = Default::default();
                write_message(backend, &msg)?;
            }
            _ => write_message(backend, &msg)?,
        }
    }
    Ok(held_count)
}

/// Refuses descriptors the vhost crate would trust to death: a kick, call or error
/// descriptor that is not an eventfd (the worker blocks reading 8 bytes from it, and joining
/// that worker blocks every later connection), and a memory region reaching past the end of
/// its file or in a memfd that may still shrink (mapping it, then touching it, is SIGBUS).
fn check_descriptors(msg: &Message) -> io::Result<()> {
    match msg.request {
        REQ_SET_VRING_KICK | REQ_SET_VRING_CALL | REQ_SET_VRING_ERR => {
            for fd in &msg.fds {
                let target = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
                if target.as_os_str() != "anon_inode:[eventfd]" {
                    return Err(invalid(
                        "a vring notification descriptor that is not an eventfd",
                    ));
                }
            }
        }
        REQ_SET_MEM_TABLE => {
            // VhostUserMemory: nregions (u32), padding (u32), then per region guest address,
            // size, user address, mmap offset (u64 each)
            let nregions = msg
                .payload
                .first_chunk::<4>()
                .map_or(0, |b| u32::from_le_bytes(*b) as usize);
            if nregions != msg.fds.len() {
                return Err(invalid(
                    "a memory table whose regions and descriptors disagree",
                ));
            }
            for (i, fd) in msg.fds.iter().enumerate() {
                let field = |k: usize| {
                    msg.payload
                        .get(8 + i * 32 + k * 8..8 + i * 32 + k * 8 + 8)
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_le_bytes)
                };
                let (Some(size), Some(offset)) = (field(1), field(3)) else {
                    return Err(invalid("a memory table shorter than its region count"));
                };
                let file = std::fs::File::from(fd.try_clone()?);
                let len = file.metadata()?.len();
                if offset.checked_add(size).is_none_or(|end| end > len) {
                    return Err(invalid("a memory region past the end of its file"));
                }
                if may_shrink(fd) {
                    return Err(invalid(
                        "a memory region in a memfd without F_SEAL_SHRINK (QEMU seals its memfd backend by default)",
                    ));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Whether `fd` is a memfd that may still be shrunk (files that take no seals can be
/// truncated only by their owner's other writers, which a VMM is; memfds are checked).
#[allow(unsafe_code)]
fn may_shrink(fd: &OwnedFd) -> bool {
    // SAFETY: fcntl(F_GET_SEALS) takes an open descriptor we own and returns an integer.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & libc::F_SEAL_SHRINK == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn msg(request: u32, flags: u32, payload: &[u8]) -> Message {
        Message {
            request,
            flags,
            payload: payload.to_vec(),
            fds: Vec::new(),
        }
    }

    #[test]
    fn early_ring_enables_wait_for_the_features() {
        let (qemu, relay_q) = UnixStream::pair().unwrap();
        let (relay_b, backend) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || relay(relay_q, relay_b, || {}));
        let enable = |i: u32| {
            let mut p = i.to_le_bytes().to_vec();
            p.extend_from_slice(&1u32.to_le_bytes());
            p
        };
        write_message(&qemu, &msg(1, 1, &[])).unwrap(); // GET_FEATURES
        write_message(
            &qemu,
            &msg(REQ_SET_VRING_ENABLE, 1 | FLAG_NEED_REPLY, &enable(0)),
        )
        .unwrap();
        // the relay answers the held request itself
        let r = read_message(&qemu).unwrap().unwrap();
        assert_eq!(
            (r.request, r.flags & FLAG_REPLY),
            (REQ_SET_VRING_ENABLE, FLAG_REPLY)
        );
        write_message(&qemu, &msg(REQ_SET_VRING_ENABLE, 1, &enable(1))).unwrap();
        let features = (PROTOCOL_FEATURES | 1 << 32).to_le_bytes();
        write_message(&qemu, &msg(REQ_SET_FEATURES, 1, &features)).unwrap();
        write_message(&qemu, &msg(REQ_SET_VRING_ENABLE, 1, &enable(0))).unwrap();
        let seen: Vec<(u32, Vec<u8>)> = (0..5)
            .map(|_| {
                let m = read_message(&backend).unwrap().unwrap();
                assert_eq!(m.flags & FLAG_NEED_REPLY, 0);
                (m.request, m.payload)
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (1, vec![]),
                (REQ_SET_FEATURES, features.to_vec()),
                (REQ_SET_VRING_ENABLE, enable(0)),
                (REQ_SET_VRING_ENABLE, enable(1)),
                (REQ_SET_VRING_ENABLE, enable(0)),
            ]
        );
        // a reply from the back end reaches QEMU
        write_message(&backend, &msg(1, 1 | FLAG_REPLY, &7u64.to_le_bytes())).unwrap();
        assert_eq!(read_message(&qemu).unwrap().unwrap().u64_payload(), Some(7));
        drop(qemu);
        assert_eq!(t.join().unwrap().unwrap(), 2);
    }

    #[test]
    fn descriptors_pass_with_their_message() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = UnixStream::pair().unwrap();
        let mut m = msg(5, 1, &[1, 2, 3]);
        m.fds.push(OwnedFd::from(r));
        write_message(&a, &m).unwrap();
        let got = read_message(&b).unwrap().unwrap();
        assert_eq!(
            (got.request, got.payload.as_slice(), got.fds.len()),
            (5, &[1u8, 2, 3][..], 1)
        );
        // the descriptor is the same socket
        let mut sent = UnixStream::from(got.fds.into_iter().next().unwrap());
        (&w).write_all(b"x").unwrap();
        let mut buf = [0u8; 1];
        sent.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"x");
    }

    #[test]
    fn oversized_payloads_end_the_connection() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut h = [0u8; HDR_LEN];
        h[8..12].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_le_bytes());
        (&a).write_all(&h).unwrap();
        assert!(read_message(&b).is_err());
    }
}
