//! QR codes for pairing tickets: drawn on a terminal, written to and read from PNG.
//!
//! `hearth pair` shows its invitation three ways: the `hearth1…` ticket text, a
//! QR code drawn in the terminal ([`render_terminal`]) and, with `--qr FILE.png`,
//! a standard QR PNG ([`write_png`]). `hearth join --qr FILE.png` reads the PNG
//! back ([`read_png`]) and hands the text to
//! [`Invitation::decode`](hearth_crypto::ticket::Invitation::decode).
//!
//! Encode the ticket's
//! [`qr_payload`](hearth_crypto::ticket::Invitation::qr_payload), its upper-case
//! form: QR alphanumeric mode packs it at 5.5 bits a character, so the code has
//! fewer modules and scans from a terminal. The encoder picks the mode from the
//! text, so any text works; upper case just makes it smaller.
//!
//! # Terminal drawing
//!
//! Each character cell holds two modules, one above the other, with the
//! half-block characters `▀ ▄ █` and space. The colours are set explicitly
//! (black on bright white, ANSI SGR `30;107`) instead of borrowing the
//! terminal's own foreground and background, so the code reads dark-on-light on
//! both dark and light terminal themes; scanners expect that polarity. The
//! quiet zone (4 modules) is drawn in the same white.
//!
//! # Files
//!
//! A PNG is written atomically: to a temporary file in the same directory, synced,
//! then renamed over the target, so a reader never sees half an image. Reading
//! checks the image dimensions from the header before decoding any pixels, and
//! refuses files holding no QR code or several, each with an error naming the
//! file.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use image::{GrayImage, ImageFormat, ImageReader, Limits, Luma};
use qrcode::{Color, QrCode};

/// Side of one module in a written PNG, in pixels.
pub const PNG_MODULE_PX: u32 = 8;

/// Width of the quiet zone around a code, in modules, as the QR standard asks.
pub const QUIET_ZONE: usize = 4;

/// Largest image [`read_png`] decodes, in pixels on either side.
pub const MAX_IMAGE_SIDE: u32 = 8192;

/// Black foreground on bright white background, then the reset.
const ANSI_DARK_ON_LIGHT: &str = "\x1b[30;107m";
const ANSI_RESET: &str = "\x1b[0m";

/// Why a QR code could not be drawn, written or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text does not fit in a QR code.
    #[error("cannot make a QR code of this text: {0}")]
    Encode(#[source] qrcode::types::QrError),
    /// The image could not be encoded as PNG.
    #[error("cannot encode the QR code for {path} as PNG: {source}")]
    EncodePng {
        /// The file being written.
        path: PathBuf,
        /// The encoder's error.
        source: image::ImageError,
    },
    /// Writing the PNG file failed.
    #[error("cannot write the QR code to {path}: {source}")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The IO error.
        source: io::Error,
    },
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file being read.
        path: PathBuf,
        /// The IO error.
        source: io::Error,
    },
    /// The file is not a PNG image this build can decode.
    #[error("{path} is not a PNG image: {source}")]
    NotAnImage {
        /// The file being read.
        path: PathBuf,
        /// The decoder's error.
        source: image::ImageError,
    },
    /// The image is larger than [`MAX_IMAGE_SIDE`] on a side.
    #[error(
        "{path} is {width}×{height} pixels; QR images are read up to {max}×{max}, scale it down"
    )]
    TooLarge {
        /// The file being read.
        path: PathBuf,
        /// Its width in pixels.
        width: u32,
        /// Its height in pixels.
        height: u32,
        /// [`MAX_IMAGE_SIDE`].
        max: u32,
    },
    /// No QR code was found in the image.
    #[error("no QR code found in {path}")]
    NoCode {
        /// The file being read.
        path: PathBuf,
    },
    /// The image holds more than one QR code, so which one to read is unclear.
    #[error("{path} holds {count} QR codes; crop it to the one to read")]
    SeveralCodes {
        /// The file being read.
        path: PathBuf,
        /// How many codes were found.
        count: usize,
    },
    /// A QR code was found but could not be decoded.
    #[error("the QR code in {path} cannot be read ({source}); take a sharper picture")]
    Unreadable {
        /// The file being read.
        path: PathBuf,
        /// The QR decoder's error.
        source: rqrr::DeQRError,
    },
}

/// Draws the QR code of `text` for a terminal: half-block characters, two
/// modules per line, explicit black-on-white colours, a 4-module quiet zone.
/// Lines are separated by `\n`; the result has no trailing newline.
pub fn render_terminal(text: &str) -> Result<String, Error> {
    let code = QrCode::new(text.as_bytes()).map_err(Error::Encode)?;
    let grid = ModuleGrid::with_quiet_zone(&code);
    let mut out = String::new();
    for pair in 0..grid.side.div_ceil(2) {
        let (top, bottom) = (2 * pair, 2 * pair + 1);
        if pair > 0 {
            out.push('\n');
        }
        out.push_str(ANSI_DARK_ON_LIGHT);
        for x in 0..grid.side {
            out.push(match (grid.is_dark(x, top), grid.is_dark(x, bottom)) {
                (false, false) => ' ',
                (true, false) => '▀',
                (false, true) => '▄',
                (true, true) => '█',
            });
        }
        out.push_str(ANSI_RESET);
    }
    Ok(out)
}

/// Writes the QR code of `text` to `path` as a PNG: black on white,
/// [`PNG_MODULE_PX`] pixels a module, a 4-module quiet zone. The file is
/// replaced atomically.
pub fn write_png(text: &str, path: &Path) -> Result<(), Error> {
    let code = QrCode::new(text.as_bytes()).map_err(Error::Encode)?;
    let image: GrayImage = code
        .render::<Luma<u8>>()
        .quiet_zone(true)
        .module_dimensions(PNG_MODULE_PX, PNG_MODULE_PX)
        .build();
    let mut png = Vec::new();
    image
        .write_to(&mut io::Cursor::new(&mut png), ImageFormat::Png)
        .map_err(|source| Error::EncodePng {
            path: path.to_owned(),
            source,
        })?;
    write_atomically(path, &png).map_err(|source| Error::Write {
        path: path.to_owned(),
        source,
    })
}

/// Reads the single QR code in the PNG at `path` and returns its text.
pub fn read_png(path: &Path) -> Result<String, Error> {
    let read_error = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let not_image = |source| Error::NotAnImage {
        path: path.to_owned(),
        source,
    };
    // The header gives the size without decoding pixels.
    let (width, height) = open_image(path)
        .map_err(read_error)?
        .into_dimensions()
        .map_err(not_image)?;
    if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        return Err(Error::TooLarge {
            path: path.to_owned(),
            width,
            height,
            max: MAX_IMAGE_SIDE,
        });
    }
    let mut reader = open_image(path).map_err(read_error)?;
    // The header was checked, but the file may change between the two opens.
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    reader.limits(limits);
    let luma = reader.decode().map_err(not_image)?.to_luma8();

    let mut prepared = rqrr::PreparedImage::prepare(luma);
    let grids = prepared.detect_grids();
    match grids.as_slice() {
        [] => Err(Error::NoCode {
            path: path.to_owned(),
        }),
        [grid] => grid
            .decode()
            .map(|(_, text)| text)
            .map_err(|source| Error::Unreadable {
                path: path.to_owned(),
                source,
            }),
        several => Err(Error::SeveralCodes {
            path: path.to_owned(),
            count: several.len(),
        }),
    }
}

fn open_image(path: &Path) -> io::Result<ImageReader<io::BufReader<std::fs::File>>> {
    ImageReader::open(path)?.with_guessed_format()
}

/// The modules of a code surrounded by the quiet zone; outside is light.
struct ModuleGrid {
    side: usize,
    dark: Vec<bool>,
}

impl ModuleGrid {
    fn with_quiet_zone(code: &QrCode) -> Self {
        let width = code.width();
        let side = width + 2 * QUIET_ZONE;
        let mut dark = vec![false; side * side];
        for (i, color) in code.to_colors().into_iter().enumerate() {
            let (x, y) = (i % width + QUIET_ZONE, i / width + QUIET_ZONE);
            dark[y * side + x] = color == Color::Dark;
        }
        Self { side, dark }
    }

    fn is_dark(&self, x: usize, y: usize) -> bool {
        x < self.side && y < self.side && self.dark[y * self.side + x]
    }
}

/// Writes `bytes` to a fresh temporary file next to `path`, syncs it and
/// renames it over `path`, so `path` holds either the old or the new content.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file")
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let tmp = dir.join(tmp_name);

    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        // Best effort: the temporary file may not exist if creating it failed.
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    // Make the rename itself durable; some filesystems cannot sync a
    // directory, and the file is complete either way.
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_crypto::identity::DeviceKey;
    use hearth_crypto::membership::AccountId;
    use hearth_crypto::ticket::Invitation;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn ticket() -> Invitation {
        let mut rng = StdRng::seed_from_u64(11);
        Invitation::generate(
            AccountId::from_bytes(&[4; 32]),
            DeviceKey::from_bytes(&[5; 32]).id(),
            vec![
                "/ip4/192.168.1.20/udp/4001/quic-v1".to_owned(),
                "/ip4/192.168.1.20/tcp/4001".to_owned(),
            ],
            1_700_000_120_000,
            &mut rng,
        )
        .unwrap()
    }

    #[test]
    fn png_round_trips_a_ticket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pair.png");
        let inv = ticket();
        write_png(&inv.qr_payload(), &path).unwrap();
        let text = read_png(&path).unwrap();
        assert_eq!(text, inv.qr_payload());
        assert_eq!(Invitation::decode(&text).unwrap(), inv);
        // Only the target is left behind, no temporary file.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("pair.png")]);
    }

    #[test]
    fn png_has_quiet_zone_and_module_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.png");
        let payload = ticket().qr_payload();
        write_png(&payload, &path).unwrap();
        let img = image::open(&path).unwrap().to_luma8();
        let modules = QrCode::new(payload.as_bytes()).unwrap().width() as u32;
        let side = (modules + 2 * QUIET_ZONE as u32) * PNG_MODULE_PX;
        assert_eq!(img.dimensions(), (side, side));
        let border = QUIET_ZONE as u32 * PNG_MODULE_PX;
        for y in 0..side {
            for x in 0..border {
                assert_eq!(img.get_pixel(x, y).0[0], 255, "({x},{y})");
                assert_eq!(img.get_pixel(side - 1 - x, y).0[0], 255);
            }
        }
        // The top-left finder pattern starts right after the quiet zone.
        assert_eq!(img.get_pixel(border, border).0[0], 0);
    }

    #[test]
    fn write_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pair.png");
        std::fs::write(&path, b"old").unwrap();
        write_png("HEARTH1NEW", &path).unwrap();
        assert_eq!(read_png(&path).unwrap(), "HEARTH1NEW");
    }

    #[test]
    fn write_into_missing_directory_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("pair.png");
        let err = write_png("HEARTH1", &path).unwrap_err();
        assert!(matches!(err, Error::Write { .. }), "{err:?}");
        assert!(err.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn terminal_drawing_is_multi_line_and_scans() {
        let payload = ticket().qr_payload();
        let drawn = render_terminal(&payload).unwrap();
        let lines: Vec<&str> = drawn.lines().collect();
        let side = QrCode::new(payload.as_bytes()).unwrap().width() + 2 * QUIET_ZONE;
        assert_eq!(lines.len(), side.div_ceil(2));
        // Rebuild the module grid from the characters and scan it as an image.
        let scale = 4u32;
        let mut img = GrayImage::from_pixel(side as u32 * scale, side as u32 * scale, Luma([255]));
        for (row, line) in lines.iter().enumerate() {
            let body = line
                .strip_prefix(ANSI_DARK_ON_LIGHT)
                .and_then(|l| l.strip_suffix(ANSI_RESET))
                .unwrap();
            assert_eq!(body.chars().count(), side);
            for (x, c) in body.chars().enumerate() {
                let (top, bottom) = match c {
                    ' ' => (false, false),
                    '▀' => (true, false),
                    '▄' => (false, true),
                    '█' => (true, true),
                    other => panic!("unexpected {other:?}"),
                };
                for (dy, dark) in [(0, top), (1, bottom)] {
                    let y = 2 * row + dy;
                    if dark && y < side {
                        for px in 0..scale {
                            for py in 0..scale {
                                img.put_pixel(
                                    x as u32 * scale + px,
                                    y as u32 * scale + py,
                                    Luma([0]),
                                );
                            }
                        }
                    }
                }
            }
        }
        let mut prepared = rqrr::PreparedImage::prepare(img);
        let grids = prepared.detect_grids();
        assert_eq!(grids.len(), 1);
        assert_eq!(grids[0].decode().unwrap().1, payload);
    }

    #[test]
    fn garbage_file_is_not_an_image() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.png");
        std::fs::write(&path, b"this is not a png at all").unwrap();
        let err = read_png(&path).unwrap_err();
        assert!(matches!(err, Error::NotAnImage { .. }), "{err:?}");
        assert!(err.to_string().contains("garbage.png"));
    }

    #[test]
    fn missing_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.png");
        let err = read_png(&path).unwrap_err();
        assert!(matches!(err, Error::Read { .. }), "{err:?}");
        assert!(err.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn image_without_code_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blank.png");
        GrayImage::from_pixel(200, 200, Luma([255]))
            .save(&path)
            .unwrap();
        assert!(matches!(read_png(&path), Err(Error::NoCode { .. })));
    }

    #[test]
    fn image_with_two_codes_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("two.png");
        let one = QrCode::new(b"HEARTH1AAAA")
            .unwrap()
            .render::<Luma<u8>>()
            .module_dimensions(4, 4)
            .build();
        let (w, h) = one.dimensions();
        let mut both = GrayImage::from_pixel(w * 2, h, Luma([255]));
        image::imageops::replace(&mut both, &one, 0, 0);
        image::imageops::replace(&mut both, &one, i64::from(w), 0);
        both.save(&path).unwrap();
        let err = read_png(&path).unwrap_err();
        assert!(
            matches!(err, Error::SeveralCodes { count: 2, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn oversized_image_is_refused_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.png");
        // A 1-pixel-high strip wider than the bound: small on disk and in memory.
        GrayImage::from_pixel(MAX_IMAGE_SIDE + 1, 1, Luma([255]))
            .save(&path)
            .unwrap();
        let err = read_png(&path).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
        assert!(err.to_string().contains("huge.png"));
    }

    #[test]
    fn text_too_long_for_a_qr_code_is_an_error() {
        let text = "x".repeat(8000);
        assert!(matches!(render_terminal(&text), Err(Error::Encode(_))));
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            write_png(&text, &dir.path().join("x.png")),
            Err(Error::Encode(_))
        ));
    }
}
