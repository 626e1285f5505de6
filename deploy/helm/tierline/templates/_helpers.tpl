{{/*
Names, labels, and the facts about each service that come from its code (not from values):
which services read API keys and which a database, how many connections each opens, and which
topics each produces and consumes (shared/contracts/topics.py, each service's app.py).
*/}}

{{- define "tierline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tierline.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tierline.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "tierline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tierline
{{- end }}

{{/* Selector labels of one service's pods; call with (dict "root" $ "service" "intake"). */}}
{{- define "tierline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tierline.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .service }}
{{- end }}

{{- define "tierline.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
What each service is, from its code. keys: reads TIERLINE_ADMIN_KEY etc. (KeySettings);
database: reads DATABASE_URL (DatabaseSettings); api: has an HTTP API beyond /healthz and
/metrics (gets a Service); extraConnections: connections opened besides DATABASE_POOL_SIZE
(metering's export pool, billing's LISTEN connection); produces/consumes: topics (a consumer
also writes its topic's .dlq); groups: consumer groups it commits (read) or only reads the
offsets of (describe).
*/}}
{{- define "tierline.traits" -}}
intake:
  keys: true
  database: false
  api: true
  extraConnections: 0
  produces: [workitems.completed]
  consumes: []
  readsGroups: []
  describesGroups: []
classifier:
  keys: false
  database: false
  api: false
  extraConnections: 0
  produces: [workitems.classified, workitems.unclassified, workitems.completed.dlq, agreements.dlq]
  consumes: [workitems.completed, agreements, agreements.dlq]
  readsGroups: [tierline-classifier]
  describesGroups: []
metering:
  keys: true
  database: true
  api: true
  extraConnections: 2
  produces: [usage.alerts, workitems.classified.dlq, agreements.dlq]
  consumes: [workitems.classified, agreements, agreements.dlq]
  readsGroups: [tierline-metering]
  describesGroups: []
billing:
  keys: true
  database: true
  api: true
  extraConnections: 1
  produces: [agreements, billing.invoices]
  consumes: [agreements]
  readsGroups: []
  describesGroups: [tierline-classifier, tierline-metering]
console:
  keys: true
  database: true
  api: true
  extraConnections: 0
  produces: [workitems.completed, workitems.classified, agreements]
  consumes: [workitems.completed, workitems.classified, workitems.unclassified, agreements, billing.invoices, usage.alerts, workitems.completed.dlq, workitems.classified.dlq, agreements.dlq]
  readsGroups: []
  describesGroups: [tierline-classifier, tierline-metering]
{{- end }}

{{- define "tierline.serviceNames" -}}
[intake, classifier, metering, billing, console]
{{- end }}

{{/* The most instances a service can run: KEDA's ceiling, else its replicas. */}}
{{- define "tierline.maxReplicas" -}}
{{- $s := index .root.Values.services .service }}
{{- if and (hasKey $s "autoscaling") $s.autoscaling.enabled }}
{{- include "tierline.scaledMax" (dict "root" .root "service" .service) }}
{{- else }}
{{- $s.replicas }}
{{- end }}
{{- end }}

{{/*
KEDA's maxReplicaCount: the configured maximum, never above the topics' partitions (an instance
beyond the partition count would get no partition and sit idle).
*/}}
{{- define "tierline.scaledMax" -}}
{{- $s := index .root.Values.services .service }}
{{- min (int $s.autoscaling.maxReplicas) (int .root.Values.kafka.topics.partitions) }}
{{- end }}

{{/*
Connections to PostgreSQL all instances of every service may open together: for each service
with a database, its most instances × (DATABASE_POOL_SIZE + what it opens besides). The pooler
must let every one of them through at once (in session mode a client waits for a server
connection until another client disconnects, and the services keep theirs open).
*/}}
{{- define "tierline.dbClientConnections" -}}
{{- $total := 0 }}
{{- $traits := include "tierline.traits" . | fromYaml }}
{{- range $name := include "tierline.serviceNames" . | fromYamlArray }}
{{- $t := index $traits $name }}
{{- if $t.database }}
{{- $s := index $.Values.services $name }}
{{- $max := include "tierline.maxReplicas" (dict "root" $ "service" $name) | int }}
{{- $total = add $total (mul $max (add (int $s.databasePoolSize) (int $t.extraConnections))) }}
{{- end }}
{{- end }}
{{- $total }}
{{- end }}

{{/*
PostgreSQL's max_connections unless set: every pooler instance may hold a server connection for
each client connection (clients are spread over the instances, but not necessarily evenly), and
CloudNativePG's own connections (replication, the instance manager, monitoring) need room.
*/}}
{{- define "tierline.pgMaxConnections" -}}
{{- $p := .Values.postgres.cnpg }}
{{- if hasKey $p.parameters "max_connections" }}
{{- index $p.parameters "max_connections" }}
{{- else }}
{{- $clients := include "tierline.dbClientConnections" . | int }}
{{- $poolers := ternary (int $p.pooler.instances) 1 $p.pooler.enabled }}
{{- add (mul $clients $poolers) 30 }}
{{- end }}
{{- end }}

{{- define "tierline.kafkaClusterName" -}}
{{- include "tierline.fullname" . }}
{{- end }}

{{- define "tierline.pgClusterName" -}}
{{- printf "%s-pg" (include "tierline.fullname" .) }}
{{- end }}

{{- define "tierline.poolerName" -}}
{{- printf "%s-pg-pooler" (include "tierline.fullname" .) }}
{{- end }}

{{/* The KafkaUser (and so the SCRAM user name) of one service. */}}
{{- define "tierline.kafkaUser" -}}
{{- printf "%s-%s" (include "tierline.fullname" .root) .service }}
{{- end }}

{{- define "tierline.kafkaBootstrap" -}}
{{- if .Values.kafka.strimzi.enabled }}
{{- printf "%s-kafka-bootstrap:%d" (include "tierline.kafkaClusterName" .) (ternary 9093 9092 .Values.kafka.sasl | int) }}
{{- else }}
{{- required "kafka.external.bootstrapServers is required when kafka.strimzi.enabled is false" .Values.kafka.external.bootstrapServers }}
{{- end }}
{{- end }}

{{/* Whether the services talk SASL_SSL to the chart's own Strimzi cluster. */}}
{{- define "tierline.strimziSasl" -}}
{{- if and .Values.kafka.strimzi.enabled .Values.kafka.sasl }}true{{ end }}
{{- end }}

{{- define "tierline.keysSecret" -}}
{{- if .Values.keys.create }}
{{- printf "%s-keys" (include "tierline.fullname" .) }}
{{- else }}
{{- required "keys.existingSecret (or keys.create with keys.admin and keys.intake) is required" .Values.keys.existingSecret }}
{{- end }}
{{- end }}
