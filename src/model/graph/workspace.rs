//! The buffers of one batch shape.

use super::*;

impl Graph<'_> {
    pub fn workspace<B: Backend>(&self, be: &mut B, steps: usize, batch: usize) -> Result<Workspace<B>> {
        let spec = self.spec;
        let (t, b, h) = (steps, batch, spec.hidden);
        let tb = t * b;
        let g = spec.cell.gates();
        let dh = spec.output_size();
        let lstm = spec.cell.has_cell_state();
        // The initial and final states: hidden `[L*D, B, H or P]`, cell `[L*D, B, H]`.
        let states_len = spec.state_rows() * b * spec.state_size();
        let cells_len = spec.state_rows() * b * h;
        let proj = spec.proj;
        let opt = |be: &mut B, on: bool, what: &str, n: usize| -> Result<Option<B::Buf>> {
            if on { be.alloc(what, n).map(Some) } else { Ok(None) }
        };

        let mut layers = Vec::with_capacity(spec.layers);
        for k in 0..spec.layers {
            let dropped = k > 0 && spec.dropout > 0.0;
            let mut dirs = Vec::new();
            // A projection adds to the first steps' input projections (`project_initial`), so
            // they are gathered.
            let tokens = match spec.input {
                InputKind::Tokens(v) if k == 0 && proj == 0 && B::STEPS_READ_INPUT_TABLE => {
                    let list = be.alloc_u32("token list", v)?;
                    be.write_u32(&list, &(0..v as u32).collect::<Vec<_>>())?;
                    Some((v, list))
                }
                _ => None,
            };
            for d in 0..spec.directions() {
                let state_base = if d == 1 { align_up(b * h) - b * h } else { 0 };
                let state_len = (state_base + (t + 1) * b * h).div_ceil(4) * 4;
                let table = match &tokens {
                    None => None,
                    Some((v, list)) => Some((be.alloc("input projection table", v * g * h)?, list.clone())),
                };
                dirs.push(DirWs {
                    xw: be.alloc("input projection", if table.is_some() { g * h } else { tb * g * h })?,
                    table,
                    states: be.alloc("hidden states", state_len)?,
                    cells: opt(be, lstm, "cell states", state_len)?,
                    gates: opt(be, spec.cell.saved() > 0, "gates", tb * spec.cell.saved() * h)?,
                    // Bound as vec4 arrays by the step kernels: whole vec4s.
                    dg: be.alloc("gate gradients", (tb * g * h).div_ceil(4) * 4)?,
                    dgh: opt(
                        be,
                        spec.cell.splits_recurrent_gradient(),
                        "recurrent gate gradients",
                        (tb * g * h).div_ceil(4) * 4,
                    )?,
                    carry: be.alloc("carried gradients", 2 * b * h)?,
                    state_base,
                    dropped: match spec.weight_drop > 0.0 {
                        true => Some((
                            // Padded as the step kernels bind W_hh (`Graph::weights`).
                            be.alloc("recurrent weight after weight drop", (g * h * h).div_ceil(4) * 4)?,
                            be.alloc(
                                "recurrent weight after weight drop, gradient",
                                g * h * spec.state_size(),
                            )?,
                        )),
                        false => None,
                    },
                    proj: match proj {
                        0 => None,
                        p => {
                            let w_eff = (g * h * h).div_ceil(4) * 4;
                            Some(ProjWs {
                                w_eff: be.alloc("effective recurrent weight", w_eff)?,
                                dw_eff: be.alloc("effective recurrent weight gradient", g * h * h)?,
                                r: be.alloc("unprojected outputs", tb * h)?,
                                dr: be.alloc("unprojected outputs gradient", tb * h)?,
                                h: be.alloc("projected outputs", tb * p)?,
                                h0: be.alloc("initial hidden state", b * p)?,
                                first: be.alloc("first step recurrent input", b * g * h)?,
                                last_r: be.alloc("final unprojected state", b * h)?,
                                last_h: be.alloc("final projected state", b * p)?,
                                first_rows: (
                                    be.alloc_u32("first step rows", b)?,
                                    be.alloc_u32("first step starts", tb + 1)?,
                                    be.alloc_u32("first step list", b)?,
                                ),
                            })
                        }
                    },
                });
            }
            layers.push(LayerWs {
                x_drop: opt(be, dropped, "dropout output", tb * dh)?,
                dx_drop: opt(be, dropped, "dropout gradient", tb * dh)?,
                y: be.alloc("layer output", tb * dh)?,
                dy: be.alloc("layer output gradient", tb * dh)?,
                dirs,
            });
        }

        let head = match spec.head {
            None => None,
            Some(head) => {
                let rows = if head.mode == OutputMode::ManyToMany { tb } else { b };
                let o = head.outputs;
                Some(HeadWs {
                    rows,
                    z: if head.mode == OutputMode::ManyToOne {
                        Some((be.alloc("last outputs", b * dh)?, be.alloc("last outputs gradient", b * dh)?))
                    } else {
                        None
                    },
                    dropped: match spec.output_dropout > 0.0 {
                        true => Some((
                            be.alloc("head input after dropout", rows * dh)?,
                            be.alloc("head input after dropout, gradient", rows * dh)?,
                        )),
                        false => None,
                    },
                    logits: be.alloc("logits", rows * o)?,
                    dlogits: be.alloc("logits gradient", rows * o)?,
                    loss_rows: be.alloc("row losses", rows)?,
                    classes: be.alloc_u32("class targets", rows)?,
                    values: be.alloc("value targets", rows * o)?,
                    weights: be.alloc("loss weights", rows)?,
                    last: if head.mode == OutputMode::ManyToOne {
                        Some((
                            be.alloc_u32("last rows", b * spec.directions())?,
                            be.alloc_u32("last starts", tb * spec.directions() + 1)?,
                            be.alloc_u32("last list", b * spec.directions())?,
                        ))
                    } else {
                        None
                    },
                })
            }
        };

        let tokens = |be: &mut B, v: usize| -> Result<Option<(B::IBuf, B::IBuf, B::IBuf)>> {
            Ok(Some((
                be.alloc_u32("tokens", tb)?,
                be.alloc_u32("token starts", v + 1)?,
                be.alloc_u32("token list", tb)?,
            )))
        };
        let (input, tokens) = match spec.input {
            InputKind::Dense(i) => (Some(be.alloc("input", tb * i)?), None),
            InputKind::Tokens(v) => (None, tokens(be, v)?),
            InputKind::Embedding { vocab, dim } => {
                (Some(be.alloc("embedded input", tb * dim)?), tokens(be, vocab)?)
            }
        };
        let rows = spec.state_rows();
        let init = if spec.learn_initial_state || spec.condition.is_some() {
            let learned = spec.learn_initial_state;
            // Learned: row r of [L*D, B, H] reads row r / B of rnn.h0 [L*D, H]. Conditioned: row
            // l * B + b reads row b * L*D + l of the projection [B, L*D, H].
            let idx: Vec<u32> =
                (0..rows * b).map(|r| if learned { r / b } else { (r % b) * rows + r / b } as u32).collect();
            let table_rows = if learned { rows } else { rows * b };
            let (starts, list) = index_lists(&idx, table_rows);
            let bufs = (
                be.alloc_u32("initial state rows", idx.len())?,
                be.alloc_u32("initial state starts", starts.len())?,
                be.alloc_u32("initial state list", list.len())?,
            );
            be.write_u32(&bufs.0, &idx)?;
            be.write_u32(&bufs.1, &starts)?;
            be.write_u32(&bufs.2, &list)?;
            let proj = |be: &mut B, on: bool| -> Result<Option<(B::Buf, B::Buf, B::Buf)>> {
                if !on {
                    return Ok(None);
                }
                Ok(Some((
                    be.alloc("conditioned state", states_len)?,
                    be.alloc("conditioned state gradient", states_len)?,
                    be.alloc("conditioned state pre-activation gradient", states_len)?,
                )))
            };
            let conditioned = spec.condition.is_some();
            Some(InitWs {
                rows: bufs.0,
                starts: bufs.1,
                list: bufs.2,
                h: proj(be, conditioned)?,
                c: proj(be, conditioned && lstm)?,
            })
        } else {
            None
        };
        Ok(Workspace {
            steps,
            batch,
            input,
            tokens,
            lengths: be.alloc_u32("lengths", b)?,
            seeds: be.alloc_u32("dropout seed", 1)?,
            h0: be.alloc("initial hidden state", states_len)?,
            c0: opt(be, lstm, "initial cell state", cells_len)?,
            hn: be.alloc("final hidden state", states_len)?,
            cn: opt(be, lstm, "final cell state", cells_len)?,
            dhn: be.alloc("final hidden state gradient", states_len)?,
            dcn: opt(be, lstm, "final cell state gradient", cells_len)?,
            dh0: be.alloc("initial hidden state gradient", states_len)?,
            dc0: opt(be, lstm, "initial cell state gradient", cells_len)?,
            d_input: match spec.input {
                InputKind::Dense(i) | InputKind::Embedding { dim: i, .. } => {
                    Some(be.alloc("input gradient", tb * i)?)
                }
                InputKind::Tokens(_) => None,
            },
            layers,
            head,
            init,
            condition: match spec.condition {
                Some(c) => Some(be.alloc("condition", b * c)?),
                None => None,
            },
        })
    }
}

impl<B: Backend> Workspace<B> {
    /// Writes, for a projected model, the rows of each sequence's first step in each direction
    /// (`ProjWs::first_rows`), from the batch's sequence lengths (each at least 1).
    pub fn write_first_rows(&self, be: &mut B, lengths: &[u32]) -> Result<()> {
        let (t, b) = (self.steps, self.batch);
        for lw in &self.layers {
            for (d, dw) in lw.dirs.iter().enumerate() {
                let Some(pw) = &dw.proj else { continue };
                let rows: Vec<u32> = (0..b)
                    .map(|i| if d == 0 { i } else { (lengths[i] as usize - 1) * b + i } as u32)
                    .collect();
                let (starts, list) = index_lists(&rows, t * b);
                be.write_u32(&pw.first_rows.0, &rows)?;
                be.write_u32(&pw.first_rows.1, &starts)?;
                be.write_u32(&pw.first_rows.2, &list)?;
            }
        }
        Ok(())
    }
}
