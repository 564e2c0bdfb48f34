//! Where the agent's routes come from, read and validated before the
//! runtime starts: a bad routes file stops the agent before it touches the
//! kernel.

use std::path::{Path, PathBuf};

use crate::routes::{RoutesError, RoutesFile};

/// Where routes come from, validated before the runtime starts.
pub enum Source {
    File {
        path: PathBuf,
        text: String,
        file: RoutesFile,
    },
    Kubernetes,
}

impl Source {
    pub fn load(routes: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = routes else {
            return Ok(Self::Kubernetes);
        };
        let text = std::fs::read_to_string(path).map_err(|source| RoutesError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file = RoutesFile::parse(&text).map_err(|error| error.in_file(path))?;
        Ok(Self::File {
            path: path.to_owned(),
            text,
            file,
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::File { .. } => "file",
            Self::Kubernetes => "kubernetes",
        }
    }

    pub fn path(&self) -> Option<PathBuf> {
        match self {
            Self::File { path, .. } => Some(path.clone()),
            Self::Kubernetes => None,
        }
    }
}
