//! A flat parameter vector with named blocks.
//!
//! All parameters live in one `Vec<f32>` (P values) so the optimiser, checkpoints and the GPU
//! upload see one buffer; a [`ParamLayout`] names each block, its shape and its optimiser group.

/// Optimiser groups with their own learning rate (spec §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Group {
    /// Time encoder, state encoder, joint policy and Langevin-scale nets (lr_policy).
    Policy,
    /// log Z (lr_flow).
    Flow,
}

/// One named block of the flat parameter vector.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    pub offset: usize,
    pub group: Group,
}

impl ParamSpec {
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// The blocks in order; offsets are contiguous.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamLayout {
    pub specs: Vec<ParamSpec>,
}

impl ParamLayout {
    /// Append a `rows × cols` block; returns its index.
    pub fn add(&mut self, name: &str, rows: usize, cols: usize, group: Group) -> usize {
        let offset = self.len();
        self.specs.push(ParamSpec {
            name: name.to_string(),
            rows,
            cols,
            offset,
            group,
        });
        self.specs.len() - 1
    }

    /// P, the total number of parameters.
    pub fn len(&self) -> usize {
        self.specs.last().map(|s| s.offset + s.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn find(&self, name: &str) -> Option<&ParamSpec> {
        self.specs.iter().find(|s| s.name == name)
    }
}
