//! Deterministic test images as OCI layouts on disk (`oci-layout`, `index.json`, `blobs/`), made
//! here from seeds: tar+gzip layers of incompressible bytes, configs with the right `diff_ids`,
//! single-platform images and multi-platform indexes. No downloads.

use super::{OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, PseudoRandom, sha256};
use std::io::Write;
use std::path::Path;

pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A blob written into a layout: its digest and size.
#[derive(Clone, Debug)]
pub struct Written {
    pub digest: String,
    pub size: usize,
}

pub struct Layout<'a> {
    dir: &'a Path,
}

impl<'a> Layout<'a> {
    pub fn create(dir: &'a Path) -> Layout<'a> {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout { dir }
    }

    pub fn blob(&self, bytes: &[u8]) -> Written {
        let digest = sha256(bytes);
        std::fs::write(self.dir.join("blobs/sha256").join(&digest[7..]), bytes).unwrap();
        Written { digest, size: bytes.len() }
    }

    /// A gzipped tar layer holding one file of `size` pseudo-random bytes; returns the layer and
    /// its diff_id (digest of the uncompressed tar). Written through a file: never all in memory.
    pub fn layer(&self, seed: u64, size: u64) -> (Written, String) {
        let tmp = self.dir.join(format!("layer-{seed}.tmp"));
        let file = std::fs::File::create(&tmp).unwrap();
        let gz = flate2::GzBuilder::new().mtime(0).write(file, flate2::Compression::fast());
        let mut hashing = HashingWriter { inner: gz, hasher: <sha2::Sha256 as sha2::Digest>::new() };
        {
            let mut tar = tar::Builder::new(&mut hashing);
            let mut header = tar::Header::new_gnu();
            header.set_size(size);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(
                &mut header,
                format!("data/file-{seed}.bin"),
                RandomReader { rng: PseudoRandom::new(seed), left: size },
            )
            .unwrap();
            tar.finish().unwrap();
        }
        let diff_id = format!("sha256:{}", hex::encode(sha2::Digest::finalize(hashing.hasher)));
        hashing.inner.finish().unwrap().sync_all().unwrap();
        let digest = file_sha256(&tmp);
        let size = std::fs::metadata(&tmp).unwrap().len() as usize;
        std::fs::rename(&tmp, self.dir.join("blobs/sha256").join(&digest[7..])).unwrap();
        (Written { digest, size }, diff_id)
    }

    /// An image of `layer_sizes` layers for `arch`; returns the manifest.
    pub fn image(&self, seed: u64, arch: &str, layer_sizes: &[u64]) -> Written {
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for (i, size) in layer_sizes.iter().enumerate() {
            let (layer, diff_id) = self.layer(seed * 1000 + i as u64, *size);
            layers.push(format!(
                r#"{{"mediaType":"{OCI_LAYER_GZIP}","digest":"{}","size":{}}}"#,
                layer.digest, layer.size
            ));
            diff_ids.push(format!(r#""{diff_id}""#));
        }
        let config = format!(
            r#"{{"architecture":"{arch}","os":"linux","config":{{"Env":["PATH=/usr/bin"]}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
            diff_ids.join(",")
        );
        let config = self.blob(config.as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":{}}},"layers":[{}]}}"#,
            config.digest,
            config.size,
            layers.join(",")
        );
        self.blob(manifest.as_bytes())
    }

    /// An index of images, each `(manifest, arch)`.
    pub fn index(&self, images: &[(&Written, &str)]) -> Written {
        let entries: Vec<String> = images
            .iter()
            .map(|(m, arch)| format!(r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#, m.digest, m.size))
            .collect();
        self.blob(
            format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#, entries.join(","))
                .as_bytes(),
        )
    }

    /// Make `index.json` name `top` (a manifest or an index) as `tag`.
    pub fn tag(&self, top: &Written, media_type: &str, tag: &str) {
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{media_type}","digest":"{}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"{tag}"}}}}]}}"#,
            top.digest, top.size
        );
        std::fs::write(self.dir.join("index.json"), index).unwrap();
    }
}

pub fn file_sha256(path: &Path) -> String {
    use sha2::Digest;
    use std::io::Read;
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

struct HashingWriter<W> {
    inner: W,
    hasher: sha2::Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct RandomReader {
    rng: PseudoRandom,
    left: u64,
}

impl std::io::Read for RandomReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        self.rng.fill(&mut buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}
