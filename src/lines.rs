//! `Lines`: a byte stream cut into lines, whatever the read boundaries.

/// Cuts a byte stream (a stream's reads) into lines, whatever the read boundaries: the
/// unfinished end of one read waits for the next. A line longer than the maximum is cut at
/// it, so memory stays bounded by the maximum, as a stream's reads are by its read cap.
///
/// Lines end at `\n`, which they are handed without; a `\r` before it stays.
///
/// ```
/// use evloop::{Command, Lines, Loop, Pipe, ReadEvent, RunMode, Stdio};
///
/// let mut lp = Loop::new()?;
/// let mut cmd = Command::new("sh");
/// cmd.args(["-c", "printf 'one\\ntw'; printf 'o\\nthree'"]).stdout(Stdio::Pipe);
/// let child = cmd.spawn(&mut lp, |lp, p, _| p.close(lp).unwrap())?;
/// let mut lines = Lines::new(1024);
/// let mut got = Vec::new();
/// child.stdout.unwrap().read_start(&mut lp, move |lp, out, ev| match ev {
///     ReadEvent::Data(d) => lines.push(d, |line| got.push(String::from_utf8_lossy(line).into_owned())),
///     _ => {
///         got.extend(lines.finish().map(|l| String::from_utf8_lossy(&l).into_owned()));
///         assert_eq!(got, ["one", "two", "three"]);
///         out.close(lp).unwrap();
///     }
/// })?;
/// lp.run(RunMode::Default)?;
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// A program that must tell a line cut at the maximum from a whole one (to mark it, or to
/// drop the rest of an overlong line) uses [`push_ends`](Lines::push_ends).
///
/// To pass lines on (with a prefix each, as a supervisor relays a child's output), gather
/// the lines of one read into one buffer and write or [`send`](crate::Pipe::send) it once:
/// a send per line is a system call per line whenever the queue is empty, many times the
/// cost of the read that brought them.
///
/// ```
/// use evloop::{Lines, Loop, Pipe};
///
/// let mut lp = Loop::new()?;
/// let (_r, out) = Pipe::pair(&mut lp)?;
/// let mut lines = Lines::new(4096);
/// let mut batch = Vec::new();
/// let mut relay = |lp: &mut Loop, data: &[u8]| {
///     lines.push(data, |line| {
///         batch.extend_from_slice(b"[job] ");
///         batch.extend_from_slice(line);
///         batch.push(b'\n');
///     });
///     out.send(lp, &batch)?;
///     batch.clear();
///     Ok::<(), std::io::Error>(())
/// };
/// relay(&mut lp, b"one\ntwo\nthr")?; // one send: "[job] one\n[job] two\n"
/// assert_eq!(out.write_queue_size(&lp)?, 0);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Lines {
    partial: Vec<u8>,
    max: usize,
}

impl Lines {
    /// Lines of at most `max` bytes, newline excluded (at least 1: 0 is taken as 1).
    pub fn new(max: usize) -> Lines {
        Lines { partial: Vec::new(), max: max.max(1) }
    }

    /// Drops the unfinished line kept from earlier calls, if any: for a stream that starts
    /// over (a log file truncated, a child restarted), whose next bytes begin a new line.
    ///
    /// ```
    /// use evloop::Lines;
    ///
    /// let mut lines = Lines::new(80);
    /// let mut got = Vec::new();
    /// lines.push(b"half a li", |l| got.push(l.to_vec()));
    /// lines.clear();
    /// lines.push(b"new\n", |l| got.push(l.to_vec()));
    /// assert_eq!(got, [b"new".to_vec()]);
    /// ```
    pub fn clear(&mut self) {
        self.partial.clear();
    }

    /// Calls `each` with every line that `data` completes, without its newline, and keeps
    /// the unfinished rest for the next call.
    pub fn push(&mut self, data: &[u8], mut each: impl FnMut(&[u8])) {
        self.push_ends(data, |line, _| each(line));
    }

    /// Like [`push`](Lines::push), also telling `each` how the line ended: at a newline,
    /// or cut at the maximum length, the rest of it coming as the next line.
    ///
    /// ```
    /// use evloop::{LineEnd, Lines};
    ///
    /// let mut lines = Lines::new(4);
    /// let mut got = Vec::new();
    /// lines.push_ends(b"abcdefg\nhi\n", |line, end| got.push((line.to_vec(), end)));
    /// assert_eq!(
    ///     got,
    ///     [
    ///         (b"abcd".to_vec(), LineEnd::Cut),
    ///         (b"efg".to_vec(), LineEnd::Newline),
    ///         (b"hi".to_vec(), LineEnd::Newline),
    ///     ]
    /// );
    /// ```
    pub fn push_ends(&mut self, mut data: &[u8], mut each: impl FnMut(&[u8], LineEnd)) {
        while !data.is_empty() {
            let room = self.max - self.partial.len();
            // How much of `data` goes into the next line, and whether a newline ends it.
            // (Looking no further than the line can reach: a long read of short lines is
            // scanned once, not once per line.)
            let reach = data.len().min(room.saturating_add(1));
            let (take, newline) = match find_newline(&data[..reach]) {
                Some(i) => (i, 1),
                None if data.len() > room => (room, 0),
                None => {
                    self.partial.extend_from_slice(data);
                    return;
                }
            };
            let end = if newline == 1 { LineEnd::Newline } else { LineEnd::Cut };
            if self.partial.is_empty() {
                each(&data[..take], end);
            } else {
                self.partial.extend_from_slice(&data[..take]);
                each(&self.partial, end);
                self.partial.clear();
            }
            data = &data[take + newline..];
        }
    }

    /// The last line, if the stream ended without a newline after it.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.partial.is_empty()).then(|| std::mem::take(&mut self.partial))
    }

    /// Bytes of the unfinished line.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }
}

/// The index of the first `\n` in `bytes`, eight bytes at a time (a byte-by-byte search
/// made the splitter half as fast as std's `read_until` on short lines).
fn find_newline(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const NEWLINES: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for word in &mut words {
        // Zero in each byte that is a newline; the test below flags a word with one.
        let x = u64::from_ne_bytes(word.try_into().expect("8 bytes")) ^ NEWLINES;
        if x.wrapping_sub(ONES) & !x & HIGHS != 0 {
            return word.iter().position(|&b| b == b'\n').map(|i| at + i);
        }
        at += 8;
    }
    words.remainder().iter().position(|&b| b == b'\n').map(|i| at + i)
}

/// How a line that [`Lines::push_ends`] hands out ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineEnd {
    /// At a `\n`, which the line is handed without.
    Newline,
    /// At the maximum length: the line goes on in the next one.
    Cut,
}

#[cfg(test)]
mod tests {
    use super::{LineEnd, Lines, find_newline};

    #[test]
    fn find_newline_finds_what_position_finds() {
        // Every length up to three words, with a newline at every place, and none.
        for len in 0..25 {
            for at in (0..len).map(Some).chain([None]) {
                let mut bytes: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                if let Some(at) = at {
                    bytes[at] = b'\n';
                    // A second one after it is not the first.
                    if at + 3 < len {
                        bytes[at + 3] = b'\n';
                    }
                }
                // Bytes that differ from a newline by one bit, or borrow in the word test.
                bytes.iter_mut().filter(|b| **b == b'c').for_each(|b| *b = 0x0b);
                bytes.iter_mut().filter(|b| **b == b'd').for_each(|b| *b = 0x8a);
                assert_eq!(find_newline(&bytes), at, "{bytes:?}");
            }
        }
    }

    #[test]
    fn long_reads_cut_at_the_limit_and_at_newlines() {
        // One 64 KiB read with no newline, cut into lines of 1 byte (it used to be scanned
        // to its end for each of them).
        let mut lines = Lines::new(1);
        let mut n = 0;
        lines.push(&[b'x'; 64 * 1024], |l| {
            assert_eq!(l, b"x");
            n += 1;
        });
        // The last byte waits: a newline may still come to end its line.
        assert_eq!((n, lines.pending()), (64 * 1024 - 1, 1));
        assert_eq!(lines.finish(), Some(b"x".to_vec()));
        // The largest limit: nothing is cut, and the rest waits.
        let mut lines = Lines::new(usize::MAX);
        let mut got = Vec::new();
        lines.push(b"a\nbb\nccc", |l| got.push(l.to_vec()));
        assert_eq!(got, [b"a".to_vec(), b"bb".to_vec()]);
        assert_eq!(lines.finish(), Some(b"ccc".to_vec()));
        assert_eq!(lines.finish(), None);
    }

    #[test]
    fn a_cut_line_is_told_apart_from_a_whole_one_across_reads() {
        let mut lines = Lines::new(3);
        let mut got = Vec::new();
        // A line of exactly the maximum, its newline in the next read; then one over it,
        // cut inside a read that began mid-line.
        for read in [&b"ab"[..], b"c", b"\nabcd", b"e\n"] {
            lines.push_ends(read, |l, end| got.push((String::from_utf8_lossy(l).into_owned(), end)));
        }
        let want = [("abc", LineEnd::Newline), ("abc", LineEnd::Cut), ("de", LineEnd::Newline)];
        assert_eq!(got, want.map(|(l, e)| (l.to_string(), e)));
        assert_eq!(lines.finish(), None);
    }
}
