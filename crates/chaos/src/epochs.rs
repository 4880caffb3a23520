//! The check that no set was written by two nodes in one epoch, from the
//! store's own evidence: `journal_epochs` (one row per set and epoch, the
//! node that appended and the positions it appended, kept when the journal
//! is trimmed). Per set, the epochs in increasing order must cover ranges
//! of positions that do not overlap and that rise with the epoch, each row
//! naming one of the run's nodes: a node that wrote after its set was taken
//! would show as a range reaching into its successor's.

use anyhow::{Context, Result};

/// One row of `journal_epochs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochRow {
    pub set: i16,
    pub epoch: i64,
    pub node: String,
    pub first_position: i64,
    pub last_position: i64,
}

/// Reads every row of the run's database, by set and epoch.
pub async fn read(url: &str) -> Result<Vec<EpochRow>> {
    let (client, connection) =
        tokio_postgres::connect(url, tokio_postgres::NoTls).await.context("connecting to the run's database")?;
    let connection = tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT set_id, epoch, node, first_position, last_position FROM journal_epochs ORDER BY set_id, epoch",
            &[],
        )
        .await
        .context("reading journal_epochs")?;
    drop(client);
    let _ = connection.await;
    Ok(rows
        .iter()
        .map(|row| EpochRow {
            set: row.get(0),
            epoch: row.get(1),
            node: row.get(2),
            first_position: row.get(3),
            last_position: row.get(4),
        })
        .collect())
}

/// What is wrong with `rows` (sorted by set, then epoch): one line each.
pub fn violations(rows: &[EpochRow], nodes: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    for row in rows {
        if !nodes.contains(&row.node) {
            problems.push(format!(
                "epochs: set {} epoch {} was written by {:?}, not a node of the run",
                row.set, row.epoch, row.node
            ));
        }
        if row.first_position > row.last_position {
            problems.push(format!(
                "epochs: set {} epoch {} has positions {}..={}",
                row.set, row.epoch, row.first_position, row.last_position
            ));
        }
    }
    for pair in rows.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        if before.set == after.set && before.last_position >= after.first_position {
            problems.push(format!(
                "epochs: set {} was written by {} at epoch {} up to position {} and by {} at epoch {} from position {}",
                before.set,
                before.node,
                before.epoch,
                before.last_position,
                after.node,
                after.epoch,
                after.first_position
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(set: i16, epoch: i64, node: &str, first_position: i64, last_position: i64) -> EpochRow {
        EpochRow { set, epoch, node: node.into(), first_position, last_position }
    }

    #[test]
    fn epochs_of_a_set_must_follow_each_other_in_its_journal() {
        let nodes = vec!["n1".to_owned(), "n2".to_owned()];
        let good = [row(0, 1, "n1", 1, 40), row(0, 3, "n2", 41, 90), row(1, 1, "n2", 1, 5), row(1, 2, "n1", 9, 9)];
        assert_eq!(violations(&good, &nodes), Vec::<String>::new());

        let overlapping = [row(0, 1, "n1", 1, 40), row(0, 2, "n2", 40, 90)];
        assert_eq!(violations(&overlapping, &nodes).len(), 1);
        let backwards = [row(0, 1, "n1", 50, 60), row(0, 2, "n2", 1, 10)];
        assert_eq!(violations(&backwards, &nodes).len(), 1);
        let stranger = [row(0, 1, "", 1, 1), row(1, 1, "standalone", 1, 1)];
        assert_eq!(violations(&stranger, &nodes).len(), 2);
    }
}
