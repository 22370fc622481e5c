{{/* Names, labels and the initial cluster of the Dhow chart. */}}

{{- define "dhow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The StatefulSet's and the headless Service's name; pods are FULLNAME-ORDINAL. */}}
{{- define "dhow.fullname" -}}
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

{{- define "dhow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dhow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dhow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "dhow.labels" -}}
helm.sh/chart: {{ include "dhow.chart" . }}
{{ include "dhow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "dhow.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Every node's id and peer address: 1=FULLNAME-0.FULLNAME.NS.svc.DOMAIN:PEER,... */}}
{{- define "dhow.initialCluster" -}}
{{- $fullname := include "dhow.fullname" . }}
{{- $members := list }}
{{- range $i := until (int .Values.replicaCount) }}
{{- $members = append $members (printf "%d=%s-%d.%s.%s.svc.%s:%d" (add1 $i) $fullname $i $fullname $.Release.Namespace $.Values.clusterDomain (int $.Values.ports.peer)) }}
{{- end }}
{{- join "," $members }}
{{- end }}
