using HandoffDapr.Core.Handoff;
using HandoffDapr.Service.Hosting;

namespace HandoffDapr.Service.Embedded;

public sealed class SqliteRecentRuns(SqliteRunStore store) : IRecentRuns
{
    public Task<IReadOnlyList<RunHandoffState>> ListAsync(int limit, CancellationToken cancellationToken) => store.ListRecentAsync(limit, cancellationToken);
}
