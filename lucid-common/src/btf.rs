//! Kernel struct offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! The eBPF programs follow pointers through `task_struct`, `file`, `dentry` and
//! friends, whose layouts change between kernel builds; aya's eBPF side has no CO-RE, so
//! the loader reads the offsets here and hands them to the programs as a global. Only
//! what is needed is parsed: type records, their names, and struct/union members
//! (descending into anonymous members, whose offsets add up).

use std::collections::HashMap;

use crate::probe::Offsets;

/// Why the offsets could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The BTF file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Not BTF, or truncated.
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    /// A struct or member the programs need is not there.
    #[error("BTF has no {0}")]
    Missing(String),
}

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

struct Member {
    name: u32,
    ty: u32,
    bit_offset: u32,
}

struct Type {
    name: u32,
    kind: u32,
    /// The referenced type (typedef, const, ...).
    ty: u32,
    members: Vec<Member>,
}

/// Parsed type information of one BTF blob.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    by_name: HashMap<String, u32>,
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, BtfError> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    /// Parses `/sys/kernel/btf/vmlinux`.
    pub fn from_sys() -> Result<Btf, BtfError> {
        let path = "/sys/kernel/btf/vmlinux";
        let bytes = std::fs::read(path).map_err(|source| BtfError::Read { path: path.into(), source })?;
        Btf::parse(&bytes)
    }

    /// Parses a BTF blob (little-endian).
    pub fn parse(b: &[u8]) -> Result<Btf, BtfError> {
        if b.get(0..2) != Some(&[0x9f, 0xeb]) {
            return Err(BtfError::Malformed("bad magic"));
        }
        let hdr_len = u32_at(b, 4)? as usize;
        let type_off = u32_at(b, 8)? as usize;
        let type_len = u32_at(b, 12)? as usize;
        let str_off = u32_at(b, 16)? as usize;
        let str_len = u32_at(b, 20)? as usize;
        let types_bytes = b.get(hdr_len + type_off..hdr_len + type_off + type_len).ok_or(BtfError::Malformed("type section"))?;
        let strings = b.get(hdr_len + str_off..hdr_len + str_off + str_len).ok_or(BtfError::Malformed("string section"))?.to_vec();
        // Type id 0 is void.
        let mut types = vec![Type { name: 0, kind: 0, ty: 0, members: Vec::new() }];
        let mut at = 0;
        while at < types_bytes.len() {
            let name = u32_at(types_bytes, at)?;
            let info = u32_at(types_bytes, at + 4)?;
            let size_or_type = u32_at(types_bytes, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => at += 4,
                KIND_ARRAY => at += 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let offset = u32_at(types_bytes, m + 8)?;
                        members.push(Member {
                            name: u32_at(types_bytes, m)?,
                            ty: u32_at(types_bytes, m + 4)?,
                            bit_offset: if kind_flag { offset & 0xff_ffff } else { offset },
                        });
                    }
                    at += vlen * 12;
                }
                KIND_ENUM | KIND_FUNC_PROTO => at += vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => at += vlen * 12,
                _ => {}
            }
            types.push(Type { name, kind, ty: size_or_type, members });
        }
        let mut btf = Btf { types, strings, by_name: HashMap::new() };
        for (id, t) in btf.types.iter().enumerate() {
            if (t.kind == KIND_STRUCT || t.kind == KIND_UNION) && t.name != 0 {
                let name = btf.str_at(t.name).to_string();
                btf.by_name.entry(name).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn str_at(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => id = t.ty,
                _ => return Some(t),
            }
        }
        None
    }

    /// Bit offset of `member` in `t`, looking through anonymous members.
    fn member_bits(&self, t: &Type, member: &str, depth: u32) -> Option<u32> {
        if depth > 8 {
            return None;
        }
        for m in &t.members {
            if m.name != 0 {
                if self.str_at(m.name) == member {
                    return Some(m.bit_offset);
                }
            } else if let Some(inner) = self.resolve(m.ty) {
                if let Some(bits) = self.member_bits(inner, member, depth + 1) {
                    return Some(m.bit_offset + bits);
                }
            }
        }
        None
    }

    /// Byte offset of `member` (a plain name) in `struct name`.
    pub fn offset_of(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let id = *self.by_name.get(name).ok_or_else(|| BtfError::Missing(format!("struct {name}")))?;
        let t = self.types.get(id as usize).ok_or_else(|| BtfError::Missing(format!("struct {name}")))?;
        let bits = self.member_bits(t, member, 0).ok_or_else(|| BtfError::Missing(format!("{name}.{member}")))?;
        if bits % 8 != 0 {
            return Err(BtfError::Missing(format!("{name}.{member} (a bitfield)")));
        }
        Ok(bits / 8)
    }

    /// Every offset the programs use.
    pub fn offsets(&self) -> Result<Offsets, BtfError> {
        Ok(Offsets {
            task_files: self.offset_of("task_struct", "files")?,
            task_fs: self.offset_of("task_struct", "fs")?,
            task_real_parent: self.offset_of("task_struct", "real_parent")?,
            task_tgid: self.offset_of("task_struct", "tgid")?,
            task_mm: self.offset_of("task_struct", "mm")?,
            mm_exe_file: self.offset_of("mm_struct", "exe_file")?,
            files_fdt: self.offset_of("files_struct", "fdt")?,
            fdt_fd: self.offset_of("fdtable", "fd")?,
            fdt_max_fds: self.offset_of("fdtable", "max_fds")?,
            file_path: self.offset_of("file", "f_path")?,
            path_dentry: self.offset_of("path", "dentry")?,
            dentry_parent: self.offset_of("dentry", "d_parent")?,
            dentry_inode: self.offset_of("dentry", "d_inode")?,
            dentry_name: self.offset_of("dentry", "d_name")?,
            qstr_name: self.offset_of("qstr", "name")?,
            inode_ino: self.offset_of("inode", "i_ino")?,
            inode_sb: self.offset_of("inode", "i_sb")?,
            sb_dev: self.offset_of("super_block", "s_dev")?,
            fs_pwd: self.offset_of("fs_struct", "pwd")?,
            bprm_file: self.offset_of("linux_binprm", "file")?,
            bprm_filename: self.offset_of("linux_binprm", "filename")?,
            file_mode: self.offset_of("file", "f_mode")?,
            file_flags: self.offset_of("file", "f_flags")?,
            file_pos: self.offset_of("file", "f_pos")?,
            file_inode: self.offset_of("file", "f_inode")?,
            inode_size: self.offset_of("inode", "i_size")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built blob: `struct outer { int a; union { int b; struct { int c; int d; }; }; }`.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0b\0c\0d\0".to_vec();
        let s = |name: &str| {
            let needle = format!("\0{name}\0");
            strings.windows(needle.len()).position(|w| w == needle.as_bytes()).map(|p| p as u32 + 1).unwrap_or(0)
        };
        let mut types = Vec::new();
        let mut ty = |name: u32, kind: u32, vlen: u32, size: u32, extra: &[u32]| {
            for v in [name, (kind << 24) | vlen, size].iter().chain(extra) {
                types.extend_from_slice(&v.to_le_bytes());
            }
        };
        // 1: int
        ty(s("int"), KIND_INT, 0, 4, &[32]);
        // 2: anonymous struct { c @0, d @32 }
        ty(0, KIND_STRUCT, 2, 8, &[s("c"), 1, 0, s("d"), 1, 32]);
        // 3: anonymous union { b @0, <2> @0 }
        ty(0, KIND_UNION, 2, 8, &[s("b"), 1, 0, 0, 2, 0]);
        // 4: struct outer { a @0, <3> @64 }
        ty(s("outer"), KIND_STRUCT, 2, 16, &[s("a"), 1, 0, 0, 3, 64]);
        let mut b = Vec::new();
        b.extend_from_slice(&[0x9f, 0xeb, 1, 0]);
        for v in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&types);
        b.extend_from_slice(&strings);
        b
    }

    #[test]
    fn members_inside_anonymous_unions_and_structs() {
        let btf = Btf::parse(&blob()).unwrap();
        assert_eq!(btf.offset_of("outer", "a").unwrap(), 0);
        assert_eq!(btf.offset_of("outer", "b").unwrap(), 8);
        assert_eq!(btf.offset_of("outer", "c").unwrap(), 8);
        assert_eq!(btf.offset_of("outer", "d").unwrap(), 12);
        assert!(matches!(btf.offset_of("outer", "e"), Err(BtfError::Missing(_))));
        assert!(matches!(btf.offset_of("inner", "a"), Err(BtfError::Missing(_))));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Btf::parse(b"nope").is_err());
        let mut b = blob();
        b.truncate(40);
        assert!(Btf::parse(&b).is_err());
    }

    /// The running kernel's offsets, where it has BTF: every field is found and the
    /// pointer fields are 8-aligned.
    #[test]
    fn running_kernel() {
        let Ok(btf) = Btf::from_sys() else {
            eprintln!("skipped: no /sys/kernel/btf/vmlinux on this machine");
            return;
        };
        let o = btf.offsets().unwrap();
        for (name, off) in [("task.files", o.task_files), ("file.f_path", o.file_path), ("dentry.d_parent", o.dentry_parent), ("inode.i_sb", o.inode_sb)] {
            assert_eq!(off % 8, 0, "{name} at {off}");
        }
        assert!(o.task_files > 0 && o.dentry_inode > 0 && o.bprm_file > 0);
    }
}
