using Microsoft.Data.Sqlite;

namespace HandoffDapr.Service.Embedded;

/// <summary>
/// Whether the data file is still at <c>Handoff:DataPath</c>. SQLite's connections keep the file they opened: one
/// deleted or moved while the service runs would go on taking commits, and vanish when the process ends with every
/// event answered 200 into it. The writer looks after each commit (one stat, beside the commit's flush); once the file
/// is missing, every write and read is refused until the service restarts: a file put back there may not be the one the
/// connections hold, and a batch committed into the lost file is reported failed, so its callers send it again.
/// </summary>
/// <param name="whenGone">Told the full path once, when the file is first found missing.</param>
internal sealed class DataFileWatch(string dataPath, Action<string> whenGone)
{
    private readonly string fullPath = Path.GetFullPath(dataPath);
    private volatile bool gone;

    /// <summary>The data file's full path.</summary>
    public string FullPath => fullPath;

    /// <summary>The file was found missing: nothing is read or written until the service restarts.</summary>
    public bool Gone => gone;

    /// <exception cref="SqliteException">The file was found missing before.</exception>
    public void ThrowIfGone()
    {
        if (gone)
        {
            throw Refusal();
        }
    }

    /// <summary>Called by the writer after a commit, before its writes are reported made.</summary>
    /// <exception cref="SqliteException">The file is missing now, or was before.</exception>
    public void CheckAfterCommit()
    {
        ThrowIfGone();
        if (!File.Exists(fullPath))
        {
            gone = true;
            whenGone(fullPath);
            throw Refusal();
        }
    }

    // A SqliteException, as a store out of reach is to its callers: 503, a Dapr event redelivered, never its text.
    private static SqliteException Refusal() =>
        new("the data file is no longer at Handoff:DataPath (deleted or moved while the service ran)", SQLitePCL.raw.SQLITE_IOERR);
}
