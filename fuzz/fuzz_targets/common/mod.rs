//! What the operation-sequence targets share: a reader that takes operations and their
//! arguments from the fuzzer's bytes. Running out of bytes ends the sequence (every read
//! returns `None` from then on), so every input is a valid sequence.
#![allow(dead_code)]

/// Reads numbers and byte strings from the front of the input.
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    pub fn bool(&mut self) -> Option<bool> {
        Some(self.u8()? & 1 == 1)
    }

    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes([
            self.u8()?,
            self.u8()?,
            self.u8()?,
            self.u8()?,
        ]))
    }

    pub fn u64(&mut self) -> Option<u64> {
        Some((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }

    /// A byte string: a two-byte length (at most `max`), then that many bytes (fewer if the
    /// input ends first).
    pub fn bytes(&mut self, max: usize) -> Option<&'a [u8]> {
        let len = usize::from(self.u16()?) % (max + 1);
        let len = len.min(self.data.len());
        let (head, rest) = self.data.split_at(len);
        self.data = rest;
        Some(head)
    }

    /// A byte string read as text (invalid UTF-8 replaced).
    pub fn string(&mut self, max: usize) -> Option<String> {
        Some(String::from_utf8_lossy(self.bytes(max)?).into_owned())
    }
}

/// Whether `FUZZ_TRACE` is set: the targets then print each operation and what came of it
/// (to read a reproducer: `FUZZ_TRACE=1 cargo fuzz run TARGET ARTIFACT`).
pub fn tracing() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FUZZ_TRACE").is_some())
}

/// Prints when tracing.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)*) => {
        if $crate::common::tracing() {
            eprintln!($($arg)*);
        }
    };
}
