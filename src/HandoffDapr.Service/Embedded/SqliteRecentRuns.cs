using HandoffDapr.Core.Handoff;
using HandoffDapr.Service.Hosting;
using Microsoft.Data.Sqlite;

namespace HandoffDapr.Service.Embedded;

public sealed class SqliteRecentRuns(SqliteRunStore store) : IRecentRuns
{
    public async Task<IReadOnlyList<RunHandoffState>> ListAsync(int limit, CancellationToken cancellationToken)
    {
        try
        {
            return await store.ListRecentAsync(limit, cancellationToken);
        }
        catch (SqliteException exception)
        {
            // As for one run's state: the store is out of reach, so the caller gets a 503, not a 500.
            throw new RunOwnerUnavailableException("The run store could not be read.", exception);
        }
    }
}
