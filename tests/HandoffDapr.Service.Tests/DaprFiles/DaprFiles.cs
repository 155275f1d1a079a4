using System.Text.Json.Nodes;
using YamlDotNet.RepresentationModel;

namespace HandoffDapr.Service.Tests.DaprFiles;

/// <summary>Reads the repository's YAML (components, dapr.yaml, k8s) and checks it against what Dapr documents.</summary>
public static class DaprFiles
{
    // Field sets from dapr/components-contrib v1.16.0 metadata.yaml files (state/redis, pubsub/redis, bindings/http,
    // secretstores/local/file) plus the runtime's state store fields (actorStateStore, keyPrefix) from dapr/docs. Not a
    // later release's: redisPort (v1.17.0) and insecureSkipTLSVerify (v1.18.0) are silently dropped by a 1.16 daprd.
    public static readonly IReadOnlyDictionary<string, HashSet<string>> DocumentedMetadata = new Dictionary<string, HashSet<string>>
    {
        ["state.redis"] =
        [
            "redisHost", "redisUsername", "redisPassword", "sentinelUsername", "sentinelPassword", "enableTLS", "clientCert",
            "clientKey", "failover", "sentinelMasterName", "redeliverInterval",
            "processingTimeout", "redisType", "redisDB", "redisMaxRetries", "redisMinRetryInterval", "redisMaxRetryInterval",
            "dialTimeout", "readTimeout", "writeTimeout", "poolSize", "poolTimeout", "maxConnAge", "minIdleConns",
            "idleCheckFrequency", "idleTimeout", "ttlInSeconds", "queryIndexes", "useEntraID", "actorStateStore", "keyPrefix",
        ],
        ["pubsub.redis"] =
        [
            "redisHost", "redisUsername", "redisPassword", "sentinelUsername", "sentinelPassword", "consumerID", "enableTLS",
            "clientCert", "clientKey", "redeliverInterval", "processingTimeout",
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

    private static readonly char[] Blanks = [' ', '\n', '\r'];

    // dapr/cli pkg/runfileconfig/run_file_config.go RunFileConfig and Common (which holds SharedRunConfig only) yaml tags.
    public static readonly HashSet<string> RunFileFields = ["version", "name", "common", "apps"];

    public static readonly HashSet<string> RunFileCommonFields =
    [
        "configFilePath", "appProtocol", "apiListenAddresses", "enableProfiling", "logLevel", "appMaxConcurrency",
        "placementHostAddress", "resourcesPath", "resourcesPaths", "appSSL", "maxBodySize", "readBufferSize",
        "enableAppHealthCheck", "appHealthCheckPath", "appHealthProbeInterval", "appHealthProbeTimeout", "appHealthThreshold",
        "enableApiLogging", "runtimePath", "env", "daprdLogDestination", "appLogDestination", "schedulerHostAddress",
    ];

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
        """.Split(Blanks, StringSplitOptions.RemoveEmptyEntries).Select(name => "dapr.io/" + name).ToHashSet();

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
        ["Configuration.features"] = ["name", "enabled"],
        ["Configuration.accessControl"] = ["defaultAction", "trustDomain", "policies"],
        ["Configuration.accessControl.policies"] = ["appId", "defaultAction", "trustDomain", "namespace", "operations"],
        ["Configuration.accessControl.policies.operations"] = ["name", "action", "httpVerb"],
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
        // pkg/apis/components/v1alpha1/types.go ComponentSpec and pkg/apis/common/namevalue.go NameValuePair, SecretKeyRef.
        ["Component"] = ["type", "version", "ignoreErrors", "metadata", "initTimeout"],
        ["Component.metadata"] = ["name", "value", "secretKeyRef", "envRef"],
        ["Component.metadata.secretKeyRef"] = ["name", "key"],
    };

    /// <summary>
    /// The top-level fields of Dapr's resources (same types.go, v1.16.0): Component and Resiliency take <c>scopes</c> there,
    /// a Component its <c>auth</c>; a Configuration has no scopes. Kubernetes' ObjectMeta is held to the names our files may
    /// use. A misspelt <c>scopes</c> or <c>auth</c> would be dropped: the resource would then apply to every app, or the
    /// component would look its secrets up in the default store.
    /// </summary>
    public static readonly IReadOnlyDictionary<string, HashSet<string>> DocumentedRootFields = new Dictionary<string, HashSet<string>>
    {
        ["Component"] = ["apiVersion", "kind", "metadata", "spec", "auth", "scopes"],
        ["Configuration"] = ["apiVersion", "kind", "metadata", "spec"],
        ["Resiliency"] = ["apiVersion", "kind", "metadata", "spec", "scopes"],
        ["metadata"] = ["name", "namespace", "labels", "annotations"],
        ["auth"] = ["secretStore"],
    };

    /// <summary>The top-level fields (and those of <c>metadata</c> and <c>auth</c>) of a Dapr resource that its type lacks.</summary>
    public static IReadOnlyList<string> UndocumentedRootFields(YamlMappingNode resource)
    {
        var kind = Scalar(resource, "kind") ?? "";
        if (!DocumentedRootFields.TryGetValue(kind, out var root))
        {
            return [$"unknown kind '{kind}'"];
        }

        var problems = new List<string>();
        foreach (var (key, value) in resource.Children)
        {
            var name = ((YamlScalarNode)key).Value!;
            if (!root.Contains(name))
            {
                problems.Add(name);
            }
            else if (name is "metadata" or "auth")
            {
                problems.AddRange(((YamlMappingNode)value).Children.Keys.Select(k => ((YamlScalarNode)k).Value!)
                    .Where(field => !DocumentedRootFields[name].Contains(field)).Select(field => $"{name}.{field}"));
            }
        }

        return problems;
    }

    /// <summary>
    /// The places in a Configuration's or Resiliency's <c>spec</c> that hold a field Dapr's type does not have (or that
    /// <see cref="DocumentedSpecFields"/> does not describe): empty when all is well.
    /// </summary>
    public static IReadOnlyList<string> UndocumentedSpecFields(YamlMappingNode resource)
    {
        var kind = Scalar(resource, "kind")!;
        // A place's fields lead to the places named after them.
        return UnknownFields(Node(resource, "spec")!, kind, kind, place => DocumentedSpecFields.TryGetValue(place, out var known)
            ? known.ToDictionary(name => name, name => $"{place}.{name}")
            : null);
    }

    /// <summary>
    /// The fields of the Kubernetes API types our k8s manifests use: each type's json field names (embedded structs
    /// flattened, as Go's json does) from kubernetes/api and kubernetes/apimachinery v0.36.3 (Kubernetes 1.36.3) apps/v1,
    /// core/v1, networking/v1 and meta/v1 types.go, and kubernetes-sigs/kustomize api/v0.21.1 api/types. "name:Type" holds
    /// a Type (or a list of them), "name:{}" a map of any keys to scalars, a bare name a scalar or a list of scalars.
    /// A field whose type is not listed may not hold an object: list that type, from the same sources, before using it.
    /// kubectl refuses (strict field validation, since 1.27) or, validating less, silently drops a field a type lacks.
    /// </summary>
    public static readonly IReadOnlyDictionary<string, string> KubernetesTypes = new Dictionary<string, string>
    {
        // The manifests' roots: status is the server's to write, not a manifest's.
        ["Deployment"] = "apiVersion kind metadata:ObjectMeta spec:DeploymentSpec",
        ["Service"] = "apiVersion kind metadata:ObjectMeta spec:ServiceSpec",
        ["NetworkPolicy"] = "apiVersion kind metadata:ObjectMeta spec:NetworkPolicySpec",
        ["PodDisruptionBudget"] = "apiVersion kind metadata:ObjectMeta spec:PodDisruptionBudgetSpec",
        // kubernetes/apimachinery pkg/apis/meta/v1/types.go
        ["ObjectMeta"] = """
            name generateName namespace selfLink uid resourceVersion generation creationTimestamp deletionTimestamp
            deletionGracePeriodSeconds labels:{} annotations:{} ownerReferences:OwnerReference finalizers
            managedFields:ManagedFieldsEntry
            """,
        ["LabelSelector"] = "matchLabels:{} matchExpressions:LabelSelectorRequirement",
        ["LabelSelectorRequirement"] = "key operator values",
        // kubernetes/api apps/v1/types.go
        ["DeploymentSpec"] = """
            replicas selector:LabelSelector template:PodTemplateSpec strategy:DeploymentStrategy minReadySeconds
            revisionHistoryLimit paused progressDeadlineSeconds
            """,
        // kubernetes/api core/v1/types.go (Probe embeds ProbeHandler, Volume VolumeSource, SecretKeySelector LocalObjectReference)
        ["PodTemplateSpec"] = "metadata:ObjectMeta spec:PodSpec",
        ["PodSpec"] = """
            volumes:Volume initContainers:Container containers:Container ephemeralContainers:EphemeralContainer
            restartPolicy terminationGracePeriodSeconds activeDeadlineSeconds dnsPolicy nodeSelector:{}
            serviceAccountName serviceAccount automountServiceAccountToken nodeName hostNetwork hostPID hostIPC
            shareProcessNamespace securityContext:PodSecurityContext imagePullSecrets:LocalObjectReference hostname
            subdomain affinity:Affinity schedulerName tolerations:Toleration hostAliases:HostAlias priorityClassName
            priority dnsConfig:PodDNSConfig readinessGates:PodReadinessGate runtimeClassName enableServiceLinks
            preemptionPolicy overhead:{} topologySpreadConstraints:TopologySpreadConstraint setHostnameAsFQDN os:PodOS
            hostUsers schedulingGates:PodSchedulingGate resourceClaims:PodResourceClaim resources:ResourceRequirements
            hostnameOverride schedulingGroup:PodSchedulingGroup
            """,
        ["PodSecurityContext"] = """
            seLinuxOptions:SELinuxOptions windowsOptions:WindowsSecurityContextOptions runAsUser runAsGroup runAsNonRoot
            supplementalGroups supplementalGroupsPolicy fsGroup sysctls:Sysctl fsGroupChangePolicy
            seccompProfile:SeccompProfile appArmorProfile:AppArmorProfile seLinuxChangePolicy
            """,
        ["SeccompProfile"] = "type localhostProfile",
        ["TopologySpreadConstraint"] = """
            maxSkew topologyKey whenUnsatisfiable labelSelector:LabelSelector minDomains nodeAffinityPolicy
            nodeTaintsPolicy matchLabelKeys
            """,
        ["Container"] = """
            name image command args workingDir ports:ContainerPort envFrom:EnvFromSource env:EnvVar
            resources:ResourceRequirements resizePolicy:ContainerResizePolicy restartPolicy
            restartPolicyRules:ContainerRestartRule volumeMounts:VolumeMount volumeDevices:VolumeDevice
            livenessProbe:Probe readinessProbe:Probe startupProbe:Probe lifecycle:Lifecycle terminationMessagePath
            terminationMessagePolicy imagePullPolicy securityContext:SecurityContext stdin stdinOnce tty
            """,
        ["ContainerPort"] = "name hostPort containerPort protocol hostIP",
        ["EnvVar"] = "name value valueFrom:EnvVarSource",
        ["EnvVarSource"] = """
            fieldRef:ObjectFieldSelector resourceFieldRef:ResourceFieldSelector configMapKeyRef:ConfigMapKeySelector
            secretKeyRef:SecretKeySelector fileKeyRef:FileKeySelector
            """,
        ["SecretKeySelector"] = "name key optional",
        ["SecurityContext"] = """
            capabilities:Capabilities privileged seLinuxOptions:SELinuxOptions
            windowsOptions:WindowsSecurityContextOptions runAsUser runAsGroup runAsNonRoot readOnlyRootFilesystem
            allowPrivilegeEscalation procMount seccompProfile:SeccompProfile appArmorProfile:AppArmorProfile
            """,
        ["Capabilities"] = "add drop",
        ["ResourceRequirements"] = "limits:{} requests:{} claims:ResourceClaim",
        ["Probe"] = """
            exec:ExecAction httpGet:HTTPGetAction tcpSocket:TCPSocketAction grpc:GRPCAction initialDelaySeconds
            timeoutSeconds periodSeconds successThreshold failureThreshold terminationGracePeriodSeconds
            """,
        ["HTTPGetAction"] = "path port host scheme httpHeaders:HTTPHeader",
        ["VolumeMount"] = "name readOnly recursiveReadOnly mountPath subPath mountPropagation subPathExpr",
        ["Volume"] = """
            name hostPath:HostPathVolumeSource emptyDir:EmptyDirVolumeSource
            gcePersistentDisk:GCEPersistentDiskVolumeSource awsElasticBlockStore:AWSElasticBlockStoreVolumeSource
            gitRepo:GitRepoVolumeSource secret:SecretVolumeSource nfs:NFSVolumeSource iscsi:ISCSIVolumeSource
            glusterfs:GlusterfsVolumeSource persistentVolumeClaim:PersistentVolumeClaimVolumeSource rbd:RBDVolumeSource
            flexVolume:FlexVolumeSource cinder:CinderVolumeSource cephfs:CephFSVolumeSource flocker:FlockerVolumeSource
            downwardAPI:DownwardAPIVolumeSource fc:FCVolumeSource azureFile:AzureFileVolumeSource
            configMap:ConfigMapVolumeSource vsphereVolume:VsphereVirtualDiskVolumeSource quobyte:QuobyteVolumeSource
            azureDisk:AzureDiskVolumeSource photonPersistentDisk:PhotonPersistentDiskVolumeSource
            projected:ProjectedVolumeSource portworxVolume:PortworxVolumeSource scaleIO:ScaleIOVolumeSource
            storageos:StorageOSVolumeSource csi:CSIVolumeSource ephemeral:EphemeralVolumeSource image:ImageVolumeSource
            """,
        ["EmptyDirVolumeSource"] = "medium sizeLimit",
        ["ServiceSpec"] = """
            ports:ServicePort selector:{} clusterIP clusterIPs type externalIPs sessionAffinity loadBalancerIP
            loadBalancerSourceRanges externalName externalTrafficPolicy healthCheckNodePort publishNotReadyAddresses
            sessionAffinityConfig:SessionAffinityConfig ipFamilies ipFamilyPolicy allocateLoadBalancerNodePorts
            loadBalancerClass internalTrafficPolicy trafficDistribution
            """,
        ["ServicePort"] = "name protocol appProtocol port targetPort nodePort",
        // kubernetes/api networking/v1/types.go
        ["NetworkPolicySpec"] = """
            podSelector:LabelSelector ingress:NetworkPolicyIngressRule egress:NetworkPolicyEgressRule policyTypes
            """,
        ["NetworkPolicyIngressRule"] = "ports:NetworkPolicyPort from:NetworkPolicyPeer",
        ["NetworkPolicyPeer"] = "podSelector:LabelSelector namespaceSelector:LabelSelector ipBlock:IPBlock",
        ["NetworkPolicyPort"] = "protocol port endPort",
        // kubernetes/api policy/v1/types.go
        ["PodDisruptionBudgetSpec"] = "minAvailable selector:LabelSelector maxUnavailable unhealthyPodEvictionPolicy",
        // kustomize api/types kustomization.go (TypeMeta embedded; metadata is kustomize's own ObjectMeta) and labels.go
        ["Kustomization"] = """
            kind apiVersion metadata:kustomize.ObjectMeta openapi:{} namePrefix nameSuffix namespace commonLabels:{}
            labels:Label commonAnnotations:{} patchesStrategicMerge patchesJson6902:Patch patches:Patch images:Image
            imageTags:Image replacements:ReplacementField replicas:Replica vars:Var sortOptions:SortOptions resources
            components crds bases configMapGenerator:ConfigMapArgs secretGenerator:SecretArgs helmGlobals:HelmGlobals
            helmCharts:HelmChart helmChartInflationGenerator:HelmChartArgs generatorOptions:GeneratorOptions
            configurations generators transformers validators buildMetadata
            """,
        ["Label"] = "pairs:{} includeSelectors includeTemplates fields:FieldSpec",
    };

    /// <summary>The apiVersion each kind in k8s/ is written against.</summary>
    public static readonly IReadOnlyDictionary<string, string> KubernetesApiVersions = new Dictionary<string, string>
    {
        ["Deployment"] = "apps/v1",
        ["Service"] = "v1",
        ["NetworkPolicy"] = "networking.k8s.io/v1",
        ["PodDisruptionBudget"] = "policy/v1",
        ["Kustomization"] = "kustomize.config.k8s.io/v1beta1",
    };

    /// <summary>
    /// The places in a Kubernetes manifest (or kustomization) that hold a field its type does not have, or an object in
    /// a field whose type <see cref="KubernetesTypes"/> does not list; or its kind or apiVersion: empty when all is well.
    /// </summary>
    public static IReadOnlyList<string> UnknownKubernetesFields(YamlMappingNode manifest)
    {
        var (kind, apiVersion) = (Scalar(manifest, "kind") ?? "", Scalar(manifest, "apiVersion"));
        if (!KubernetesApiVersions.TryGetValue(kind, out var expected) || apiVersion != expected)
        {
            return [$"{apiVersion} {kind}: not a kind and apiVersion listed"];
        }

        return UnknownFields(manifest, "", kind, type => type == "{}"
            ? new Dictionary<string, string> { ["*"] = "" }
            : KubernetesTypes.TryGetValue(type, out var fields)
                ? fields.Split(Blanks, StringSplitOptions.RemoveEmptyEntries).Select(field => field.Split(':'))
                    .ToDictionary(field => field[0], field => field.ElementAtOrDefault(1) ?? "")
                : null);
    }

    /// <summary>
    /// The places under <paramref name="node"/> that hold a field their type does not have, or an object where their
    /// type is a scalar or not described. <paramref name="fieldsOf"/> gives a type's fields, each with its value's type
    /// ("" a scalar; the field "*" stands for any name), or null for a type it does not describe. A list's items are
    /// of the list's type; scalars are not checked.
    /// </summary>
    private static List<string> UnknownFields(YamlNode node, string place, string type, Func<string, IReadOnlyDictionary<string, string>?> fieldsOf)
    {
        var problems = new List<string>();
        Walk(node, place, type);
        return problems;

        void Walk(YamlNode node, string place, string type)
        {
            switch (node)
            {
                case YamlSequenceNode items:
                    for (var i = 0; i < items.Children.Count; i++)
                    {
                        Walk(items.Children[i], $"{place}[{i}]", type);
                    }

                    break;
                case YamlMappingNode fields when fieldsOf(type) is { } known:
                    foreach (var (key, value) in fields.Children)
                    {
                        var name = ((YamlScalarNode)key).Value!;
                        var at = place.Length == 0 ? name : $"{place}.{name}";
                        if (known.TryGetValue(name, out var fieldType) || known.TryGetValue("*", out fieldType))
                        {
                            Walk(value, at, fieldType);
                        }
                        else
                        {
                            problems.Add(at);
                        }
                    }

                    break;
                case YamlMappingNode:
                    problems.Add(type.Length == 0 ? $"{place}: an object where a scalar goes" : $"{place}: type {type} is not listed");
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

    /// <summary>
    /// Whether the Configuration file turns the preview feature on (<c>spec.features[]</c>: <c>name</c>, <c>enabled</c>,
    /// pkg/apis/configuration/v1alpha1 FeatureSpec; pkg/config IsFeatureEnabled matches the name exactly).
    /// </summary>
    public static bool EnablesFeature(string configurationFile, string feature) =>
        Documents(configurationFile).Any(d => Node(d.Document, "spec", "features") is YamlSequenceNode features
            && features.Any(f => Scalar(f, "name") == feature && bool.TryParse(Scalar(f, "enabled"), out var on) && on));

    /// <summary>Whether the resiliency file gives the component an inbound (delivery to the app) retry policy.</summary>
    public static bool HasInboundRetry(string resiliencyFile, string component) =>
        Documents(resiliencyFile).Any(d => Scalar(d.Document, "spec", "targets", "components", component, "inbound", "retry") is not null);
}
