using System.Text.Json.Nodes;
using YamlDotNet.RepresentationModel;

namespace HandoffDapr.Service.Tests.DaprFiles;

/// <summary>Reads the repository's YAML (components, dapr.yaml, k8s) and checks it against what Dapr documents.</summary>
public static class DaprFiles
{
    // Field sets from dapr/components-contrib metadata.yaml files (state/redis, pubsub/redis, bindings/http,
    // secretstores/local/file) plus the runtime's state store fields (actorStateStore, keyPrefix) from dapr/docs.
    public static readonly IReadOnlyDictionary<string, HashSet<string>> DocumentedMetadata = new Dictionary<string, HashSet<string>>
    {
        ["state.redis"] =
        [
            "redisHost", "redisPort", "redisUsername", "redisPassword", "sentinelUsername", "sentinelPassword", "enableTLS",
            "insecureSkipTLSVerify", "clientCert", "clientKey", "failover", "sentinelMasterName", "redeliverInterval",
            "processingTimeout", "redisType", "redisDB", "redisMaxRetries", "redisMinRetryInterval", "redisMaxRetryInterval",
            "dialTimeout", "readTimeout", "writeTimeout", "poolSize", "poolTimeout", "maxConnAge", "minIdleConns",
            "idleCheckFrequency", "idleTimeout", "ttlInSeconds", "queryIndexes", "useEntraID", "actorStateStore", "keyPrefix",
        ],
        ["pubsub.redis"] =
        [
            "redisHost", "redisPort", "redisUsername", "redisPassword", "sentinelUsername", "sentinelPassword", "consumerID",
            "enableTLS", "insecureSkipTLSVerify", "clientCert", "clientKey", "redeliverInterval", "processingTimeout",
            "queueDepth", "concurrency", "redisType", "redisDB", "redisMaxRetries", "redisMinRetryInterval",
            "redisMaxRetryInterval", "dialTimeout", "readTimeout", "writeTimeout", "poolSize", "poolTimeout", "maxConnAge",
            "minIdleConns", "idleCheckFrequency", "idleTimeout", "failover", "sentinelMasterName", "maxLenApprox", "streamTTL",
            "useEntraID",
        ],
        ["bindings.http"] =
        [
            "url", "responseTimeout", "maxResponseBodySize", "MTLSRootCA", "MTLSClientCert", "MTLSClientKey", "MTLSRenegotiation",
            "securityToken", "securityTokenHeader", "errorIfNot2XX",
        ],
        ["secretstores.local.file"] = ["secretsFile", "nestedSeparator", "multiValued"],
    };

    // dapr/cli pkg/standalone/run.go and pkg/runfileconfig/run_file_config.go yaml tags.
    public static readonly HashSet<string> RunFileAppFields =
    [
        "appID", "appDirPath", "appChannelAddress", "appPort", "daprHTTPPort", "daprGRPCPort", "profilePort", "command",
        "metricsPort", "unixDomainSocket", "daprInternalGRPCPort", "configFilePath", "appProtocol", "apiListenAddresses",
        "enableProfiling", "logLevel", "appMaxConcurrency", "placementHostAddress", "resourcesPath", "resourcesPaths", "appSSL",
        "maxBodySize", "readBufferSize", "enableAppHealthCheck", "appHealthCheckPath", "appHealthProbeInterval",
        "appHealthProbeTimeout", "appHealthThreshold", "enableApiLogging", "runtimePath", "env", "daprdLogDestination",
        "appLogDestination", "schedulerHostAddress", "containerImage", "containerImagePullPolicy", "createService",
    ];

    // dapr/dapr pkg/injector/annotations/annotations.go (v1.16.0; 1.18 only adds names): the pod annotations the
    // sidecar injector reads. It ignores any other dapr.io/ annotation, so a misspelt one silently does nothing.
    public static readonly HashSet<string> InjectorAnnotations = """
        api-token-secret app-channel-address app-health-check-path app-health-probe-interval app-health-probe-timeout
        app-health-threshold app-id app-max-concurrency app-port app-protocol app-ssl app-token-secret block-shutdown-duration
        component-container config debug-port disable-builtin-k8s-secret-store enable-api-logging enable-app-health-check
        enable-debug enable-metrics enable-profiling enabled env env-from-secret graceful-shutdown-seconds grpc-port
        http-max-request-size http-read-buffer-size inject-pluggable-components internal-grpc-port log-as-json log-level
        max-body-size metrics-port placement-host-address pluggable-components pluggable-components-sockets-folder
        read-buffer-size scheduler-host-address sentry-request-jwt-audiences sidecar-cpu-limit sidecar-cpu-request
        sidecar-image sidecar-listen-addresses sidecar-liveness-probe-delay-seconds sidecar-liveness-probe-period-seconds
        sidecar-liveness-probe-threshold sidecar-liveness-probe-timeout-seconds sidecar-memory-limit sidecar-memory-request
        sidecar-readiness-probe-delay-seconds sidecar-readiness-probe-period-seconds sidecar-readiness-probe-threshold
        sidecar-readiness-probe-timeout-seconds sidecar-seccomp-profile-type unix-domain-socket-path volume-mounts
        volume-mounts-rw
        """.Split((char[])[' ', '\n', '\r'], StringSplitOptions.RemoveEmptyEntries).Select(name => "dapr.io/" + name).ToHashSet();

    /// <summary>
    /// The fields of Dapr's Configuration and Resiliency resources that our files use, by place: the json tags of
    /// dapr/dapr pkg/apis/configuration/v1alpha1 and pkg/apis/resiliency/v1alpha1 types.go (v1.16.0). "*" stands for a
    /// name of our own (a policy's, an actor type's, a component's); a place not listed may hold nothing.
    /// daprd does not refuse an unknown field: it drops it, so a misspelt policy or option would silently not apply.
    /// </summary>
    public static readonly IReadOnlyDictionary<string, HashSet<string>> DocumentedSpecFields = new Dictionary<string, HashSet<string>>
    {
        ["Configuration"] =
        [
            "appHttpPipeline", "httpPipeline", "tracing", "metric", "metrics", "mtls", "secrets", "accessControl",
            "nameResolution", "features", "api", "components", "logging", "wasm", "workflow",
        ],
        ["Configuration.tracing"] = ["samplingRate", "stdout", "zipkin", "otel"],
        ["Configuration.tracing.otel"] = ["protocol", "endpointAddress", "isSecure"],
        ["Configuration.features[]"] = ["name", "enabled"],
        ["Resiliency"] = ["policies", "targets"],
        ["Resiliency.policies"] = ["timeouts", "retries", "circuitBreakers"],
        ["Resiliency.policies.timeouts"] = ["*"],
        ["Resiliency.policies.retries"] = ["*"],
        ["Resiliency.policies.retries.*"] = ["policy", "duration", "maxInterval", "maxRetries", "matching"],
        ["Resiliency.policies.circuitBreakers"] = ["*"],
        ["Resiliency.policies.circuitBreakers.*"] = ["maxRequests", "interval", "timeout", "trip"],
        ["Resiliency.targets"] = ["apps", "actors", "components"],
        ["Resiliency.targets.apps"] = ["*"],
        ["Resiliency.targets.apps.*"] = ["timeout", "retry", "circuitBreaker", "circuitBreakerCacheSize"],
        ["Resiliency.targets.actors"] = ["*"],
        ["Resiliency.targets.actors.*"] = ["timeout", "retry", "circuitBreaker", "circuitBreakerScope", "circuitBreakerCacheSize"],
        ["Resiliency.targets.components"] = ["*"],
        ["Resiliency.targets.components.*"] = ["inbound", "outbound"],
        ["Resiliency.targets.components.*.inbound"] = ["timeout", "retry", "circuitBreaker"],
        ["Resiliency.targets.components.*.outbound"] = ["timeout", "retry", "circuitBreaker"],
    };

    /// <summary>
    /// The places in a Configuration's or Resiliency's <c>spec</c> that hold a field Dapr's type does not have (or that
    /// <see cref="DocumentedSpecFields"/> does not describe): empty when all is well.
    /// </summary>
    public static IReadOnlyList<string> UndocumentedSpecFields(YamlMappingNode resource)
    {
        var problems = new List<string>();
        Walk(Node(resource, "spec")!, Scalar(resource, "kind")!);
        return problems;

        void Walk(YamlNode node, string place)
        {
            switch (node)
            {
                case YamlSequenceNode items:
                    foreach (var item in items.Children)
                    {
                        Walk(item, place + "[]");
                    }

                    break;
                case YamlMappingNode fields when DocumentedSpecFields.TryGetValue(place, out var known):
                    foreach (var (key, value) in fields.Children)
                    {
                        var name = ((YamlScalarNode)key).Value!;
                        if (known.Contains("*") || known.Contains(name))
                        {
                            Walk(value, $"{place}.{(known.Contains("*") ? "*" : name)}");
                        }
                        else
                        {
                            problems.Add($"{place}.{name}");
                        }
                    }

                    break;
                case YamlMappingNode:
                    problems.Add(place);
                    break;
            }
        }
    }

    public static string RepositoryRoot => Security.WebhookSignatureTests.RepositoryRoot();

    public static IEnumerable<(string File, YamlMappingNode Document)> Documents(string relativeFolderOrFile)
    {
        var path = Path.Combine(RepositoryRoot, relativeFolderOrFile);
        IEnumerable<string> files = File.Exists(path) ? [path] : Directory.GetFiles(path, "*.yaml").Order();
        foreach (var file in files)
        {
            var stream = new YamlStream();
            using var reader = new StreamReader(file);
            stream.Load(reader);
            foreach (var document in stream.Documents)
            {
                yield return (Path.GetRelativePath(RepositoryRoot, file), (YamlMappingNode)document.RootNode);
            }
        }
    }

    public static string? Scalar(YamlNode node, params string[] path)
    {
        var current = node;
        foreach (var key in path)
        {
            if (current is not YamlMappingNode map || !map.Children.TryGetValue(new YamlScalarNode(key), out current!))
            {
                return null;
            }
        }

        return (current as YamlScalarNode)?.Value;
    }

    public static YamlNode? Node(YamlNode node, params string[] path)
    {
        var current = node;
        foreach (var key in path)
        {
            if (current is not YamlMappingNode map || !map.Children.TryGetValue(new YamlScalarNode(key), out current!))
            {
                return null;
            }
        }

        return current;
    }

    /// <summary>The metadata names of a component that Dapr does not document for its type: empty when all is well.</summary>
    public static IReadOnlyList<string> UndocumentedMetadata(YamlMappingNode component)
    {
        var type = Scalar(component, "spec", "type") ?? string.Empty;
        if (!DocumentedMetadata.TryGetValue(type, out var documented))
        {
            return [$"unknown component type '{type}'"];
        }

        var problems = new List<string>();
        foreach (var item in ((YamlSequenceNode?)Node(component, "spec", "metadata"))?.Children ?? [])
        {
            var name = Scalar(item, "name") ?? "(no name)";
            if (!documented.Contains(name))
            {
                problems.Add(name);
            }

            var hasValue = Node(item, "value") is not null;
            var hasSecret = Node(item, "secretKeyRef") is not null;
            if (hasValue == hasSecret)
            {
                problems.Add($"{name}: needs exactly one of value or secretKeyRef");
            }
        }

        return problems;
    }

    public static JsonNode AppSettings() =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(RepositoryRoot, "src", "HandoffDapr.Service", "appsettings.json")))!;

    public static JsonNode LaunchSettings() =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(RepositoryRoot, "src", "HandoffDapr.Service", "Properties", "launchSettings.json")))!;

    /// <summary>A Go duration as Dapr's YAML carries them ("500ms", "15s", "1m30s", "2h").</summary>
    public static TimeSpan GoDuration(string text)
    {
        var total = TimeSpan.Zero;
        foreach (System.Text.RegularExpressions.Match part in System.Text.RegularExpressions.Regex.Matches(text, @"(\d+(?:\.\d+)?)(ms|s|m|h)"))
        {
            var value = double.Parse(part.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
            total += part.Groups[2].Value switch
            {
                "ms" => TimeSpan.FromMilliseconds(value),
                "s" => TimeSpan.FromSeconds(value),
                "m" => TimeSpan.FromMinutes(value),
                _ => TimeSpan.FromHours(value),
            };
        }

        return total > TimeSpan.Zero ? total : throw new FormatException($"not a Go duration: {text}");
    }

    /// <summary>
    /// The retry, circuit breaker and timeout the resiliency file gives calls to <paramref name="actorType"/>, for the fake
    /// sidecar (without the retry's waits), or null when it gives none. Only a <c>consecutiveFailures >= N</c> trip is read.
    /// </summary>
    public static HandoffDapr.FakeSidecar.ActorCallPolicy? ActorCallPolicy(string resiliencyFile, string actorType)
    {
        var (_, resiliency) = Documents(resiliencyFile).Single();
        if (Node(resiliency, "spec", "targets", "actors", actorType) is not { } target)
        {
            return null;
        }

        static int Int(string? text, int fallback) => text is null ? fallback : int.Parse(text, System.Globalization.CultureInfo.InvariantCulture);
        var retries = Scalar(target, "retry") is { } retry ? Int(Scalar(resiliency, "spec", "policies", "retries", retry, "maxRetries"), -1) : 0;
        var policy = new HandoffDapr.FakeSidecar.ActorCallPolicy(MaxRetries: retries < 0 ? int.MaxValue : retries);
        if (Scalar(target, "timeout") is { } timeout)
        {
            // A named policy (spec.policies.timeouts) or a duration written in place.
            policy = policy with { CallTimeout = GoDuration(Scalar(resiliency, "spec", "policies", "timeouts", timeout) ?? timeout) };
        }

        if (Scalar(target, "circuitBreaker") is not { } name)
        {
            return policy;
        }

        var breaker = Node(resiliency, "spec", "policies", "circuitBreakers", name)!;
        var trip = System.Text.RegularExpressions.Regex.Match(Scalar(breaker, "trip") ?? "", @"^\s*consecutiveFailures\s*>=?\s*(\d+)\s*$");
        if (!trip.Success)
        {
            throw new FormatException($"{resiliencyFile}: breaker {name}: only 'consecutiveFailures >= N' is modelled");
        }

        return policy with
        {
            BreakerConsecutiveFailures = int.Parse(trip.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) + (Scalar(breaker, "trip")!.Contains(">=") ? 0 : 1),
            BreakerTimeout = GoDuration(Scalar(breaker, "timeout") ?? "60s"),
            BreakerInterval = Scalar(breaker, "interval") is { } interval ? GoDuration(interval) : TimeSpan.Zero,
            BreakerMaxRequests = Int(Scalar(breaker, "maxRequests"), 1),
            // daprd keys the breaker by type only for the scope "type"; "id", "both" and none key it by type and id.
            BreakerPerActorId = Scalar(target, "circuitBreakerScope") != "type",
        };
    }

    /// <summary>Whether the resiliency file gives the component an inbound (delivery to the app) retry policy.</summary>
    public static bool HasInboundRetry(string resiliencyFile, string component) =>
        Documents(resiliencyFile).Any(d => Scalar(d.Document, "spec", "targets", "components", component, "inbound", "retry") is not null);
}
