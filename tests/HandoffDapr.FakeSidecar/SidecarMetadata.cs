using System.Text.Json;
using Dapr.Client.Autogen.Grpc.v1;

namespace HandoffDapr.FakeSidecar;

/// <summary>
/// <c>GET v1.0/metadata</c> and gRPC <c>GetMetadata</c>: app id, registered components (name/type/version)
/// the actor types the app hosts and the enabled features (pkg/api/http/metadata.go, pkg/api/universal/metadata.go),
/// trimmed down.
/// </summary>
internal sealed class SidecarMetadata(FakeSidecarOptions options, ActorHosting hosting, HttpBindingEmulator bindings)
{
    /// <summary>
    /// With daprd's capabilities (pkg/runtime/runtime.go getComponentsCapabilitesMap): a state store's features (here
    /// those the app relies on), and <c>ACTOR</c> when it has both ETag and transactions; an output binding's
    /// <c>OUTPUT_BINDING</c>; the in-memory pub/sub reports no feature.
    /// </summary>
    public IReadOnlyList<(string Name, string Type, string Version, string[] Capabilities)> Components()
    {
        var list = new List<(string, string, string, string[])>();
        list.AddRange(options.StateStoreNames.Select(n => (n, options.StateStoreType, "v1", new[] { "ETAG", "TRANSACTIONAL", "TTL", "ACTOR" })));
        list.AddRange(options.OtherStateStores.Select(s => (s.Key, s.Value, "v1", new[] { "ETAG", "TRANSACTIONAL", "TTL", "ACTOR" })));
        list.AddRange(options.PubSubNames.Select(n => (n, "pubsub.in-memory", "v1", Array.Empty<string>())));
        list.AddRange(bindings.Names.Select(n => (n, "bindings.http", "v1", new[] { "OUTPUT_BINDING" })));
        return list;
    }

    /// <summary>
    /// The preview features daprd's Configuration turns on (<c>Configuration.EnabledFeatures</c>): here only
    /// <c>ActorStateTTL</c>, the one the fake models. The HTTP answer leaves the field out when there is none
    /// (<c>json:"enabledFeatures,omitempty"</c>).
    /// </summary>
    private string[] EnabledFeatures() => options.ActorStateTtlEnabled ? ["ActorStateTTL"] : [];

    public async Task<byte[]> BuildJsonAsync(CancellationToken ct)
    {
        var actorTypes = await hosting.GetHostedTypesAsync(ct).ConfigureAwait(false);
        var body = new Dictionary<string, object>
        {
            ["id"] = options.AppId,
            ["runtimeVersion"] = options.RuntimeVersion,
            ["actors"] = actorTypes.Order(StringComparer.Ordinal).Select(t => new { type = t, count = 0 }).ToList(),
            ["components"] = Components().Select(c => new { name = c.Name, type = c.Type, version = c.Version, capabilities = c.Capabilities }).ToList(),
            ["extended"] = new Dictionary<string, string> { ["daprRuntimeVersion"] = options.RuntimeVersion },
            ["actorRuntime"] = new
            {
                runtimeStatus = "RUNNING",
                activeActors = actorTypes.Order(StringComparer.Ordinal).Select(t => new { type = t, count = 0 }).ToList(),
                hostReady = actorTypes.Count > 0,
                placement = "placement: connected",
            },
        };
        if (EnabledFeatures() is { Length: > 0 } features)
        {
            body["enabledFeatures"] = features;
        }

        return JsonSerializer.SerializeToUtf8Bytes(body);
    }

    public async Task<GetMetadataResponse> BuildGrpcAsync(CancellationToken ct)
    {
        var actorTypes = await hosting.GetHostedTypesAsync(ct).ConfigureAwait(false);
        var response = new GetMetadataResponse { Id = options.AppId, RuntimeVersion = options.RuntimeVersion };
        response.ExtendedMetadata.Add("daprRuntimeVersion", options.RuntimeVersion);
        response.EnabledFeatures.Add(EnabledFeatures());
        foreach (var (name, type, version, capabilities) in Components())
        {
            response.RegisteredComponents.Add(new RegisteredComponents { Name = name, Type = type, Version = version, Capabilities = { capabilities } });
        }

        var runtime = new ActorRuntime
        {
            RuntimeStatus = ActorRuntime.Types.ActorRuntimeStatus.Running,
            HostReady = actorTypes.Count > 0,
            Placement = "placement: connected",
        };
        foreach (var t in actorTypes.Order(StringComparer.Ordinal))
        {
            runtime.ActiveActors.Add(new ActiveActorsCount { Type = t, Count = 0 });
        }

        response.ActorRuntime = runtime;
        return response;
    }
}
