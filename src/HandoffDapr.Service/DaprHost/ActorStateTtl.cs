using Dapr.Client;
using HandoffDapr.Service.Configuration;
using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.DaprHost;

/// <summary>
/// How a save takes the TTL off a run's keys (a settled run with something pending again), which state stores do apart
/// (components-contrib): Redis keeps a key's TTL on a write without <c>ttlInSeconds</c>, and takes it off for "-1"
/// (state/redis/redis.go, PERSIST for ttl &lt;= 0); SQL Server, MongoDB and DynamoDB read "-1" as now + ttl, a key
/// expired a second ago (state/sqlserver/v2 DATEADD(SECOND, @TTL, GETDATE()), state/mongodb $$NOW + ttl,
/// state/aws/dynamodb now + ttl), and take it off on a write without one, as PostgreSQL, MySQL, SQLite, etcd and the
/// in-memory store do too. Told by the actor state store's type in daprd's metadata, read once, when first needed.
/// </summary>
public sealed class ActorStateTtl(DaprClient dapr, IOptions<HandoffOptions> options)
{
    /// <summary>The one store type known to keep a key's TTL on a write without <c>ttlInSeconds</c>.</summary>
    public const string RedisType = "state.redis";

    private const int Unknown = 0, KeptByPlainWrite = 1, ClearedByPlainWrite = 2;
    private int known = Unknown;

    /// <summary>
    /// Whether a write without <c>ttlInSeconds</c> keeps a key's TTL, so that taking it off needs "-1". Throws when
    /// daprd's metadata cannot be read, or does not tell the actor state store's type (the readiness check says why,
    /// with <c>Handoff:RunRetention</c> set): the save fails, and is made again, rather than guess and lose the run.
    /// </summary>
    public async Task<bool> KeptByPlainWriteAsync(CancellationToken cancellationToken)
    {
        if (Volatile.Read(ref known) is not Unknown and var value)
        {
            return value == KeptByPlainWrite;
        }

        var (metadata, _) = await SidecarStartup.ReadMetadataAsync(dapr, cancellationToken);
        var type = (metadata is null ? null : SidecarComponents.ActorStateStoreType(metadata, options.Value.Dapr))
            ?? throw new InvalidOperationException(
                "The actor state store's type is not known, so a run's TTL cannot be taken off.");
        var kept = string.Equals(type, RedisType, StringComparison.Ordinal);
        Volatile.Write(ref known, kept ? KeptByPlainWrite : ClearedByPlainWrite);
        return kept;
    }
}
