//! `bsa encode`: float embeddings to packed binary codes (numpy `packbits(bitorder="little")`).

use std::path::PathBuf;

/// Encode embeddings into packed binary codes.
///
/// Writes a uint8 .npy of shape n x ceil(N/8): bit j of a code is in byte j/8 at bit position
/// j%8 (numpy `packbits(bitorder="little")`, the FAISS layout).
///
/// Example:
///   bsa encode --model model.safetensors --data base.npy --out codes.npy
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    #[command(flatten)]
    pub input: super::io::ModelData,
    /// Output .npy (uint8).
    #[arg(long)]
    pub out: PathBuf,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    super::io::refuse_clobbering(
        &a.out,
        true,
        &[
            ("--model", Some(&a.input.model)),
            ("--data", Some(&a.input.data)),
        ],
    )?;
    bsa::threads::configure(a.threads)?;
    let (model, data) = a.input.open(super::io::ZeroRows::Allowed)?;
    super::io::warn_if_not_unit(&data, model.config.method);
    let bits = model.config.bits;
    // Written as encoded, a chunk of rows at a time: no copy of all the codes is held. A
    // Ctrl-C stops it between chunks, and the unfinished file goes (killed, it would stay).
    let stop = super::signals::stop_on_signal()?;
    bsa::io::write_u8_rows(&a.out, data.n(), bits.div_ceil(8), |sink| {
        model.encode_chunks_until(data.view(), &stop, &mut |codes| {
            sink(&bsa::model::pack_active(codes, bits))
        })
    })?;
    Ok(())
}
